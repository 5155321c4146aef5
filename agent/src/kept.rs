//! Rows' samples kept encoded from one scrape to the next. Most rows of a node with many
//! pods do not move between two scrapes (pause containers, idle pods, pods that did no
//! I/O), and encoding them every scrape was a fifth of a scrape of 4,096 pods. So each row
//! keeps its samples as the last scrape encoded them, with what they showed (values,
//! labels), and is encoded again only when that changes. The cgroup family keeps its rows
//! this way in text and in protobuf, and the disk family its per-pod rows in protobuf.
//!
//! Rows come sorted by key, and so do the kept encodings (they are the last scrape's rows),
//! so one merge finds each row's. Out of order, a row would only miss its kept encoding,
//! never get another row's.
use std::ops::Range;

/// A buffer samples are encoded into: `String` for text, `Vec<u8>` for protobuf.
pub trait Buffer: Default {
    type Slice: ?Sized;
    /// Bytes written: where the next sample starts.
    fn written(&self) -> usize;
    fn clear(&mut self);
    fn slice(&self, range: Range<usize>) -> &Self::Slice;
}

impl Buffer for String {
    type Slice = str;
    fn written(&self) -> usize {
        String::len(self)
    }
    fn clear(&mut self) {
        String::clear(self)
    }
    fn slice(&self, range: Range<usize>) -> &str {
        &self[range]
    }
}

impl Buffer for Vec<u8> {
    type Slice = [u8];
    fn written(&self) -> usize {
        Vec::len(self)
    }
    fn clear(&mut self) {
        Vec::clear(self)
    }
    fn slice(&self, range: Range<usize>) -> &[u8] {
        &self[range]
    }
}

/// One row's samples of `N` families, one family after the other in one buffer.
#[derive(Debug)]
pub struct Families<B, const N: usize> {
    /// The samples; a family's are written after [`Self::start`] says which it is.
    pub buf: B,
    /// Family k's samples end at `ends[k]`.
    ends: [usize; N],
    /// Families whose end is set.
    ended: usize,
}

impl<B: Buffer, const N: usize> Default for Families<B, N> {
    fn default() -> Self {
        Self {
            buf: B::default(),
            ends: [0; N],
            ended: 0,
        }
    }
}

impl<B: Buffer, const N: usize> Families<B, N> {
    fn clear(&mut self) {
        self.buf.clear();
        self.ended = 0;
    }

    /// Family `k`'s samples follow: the families before it end here. Families come in
    /// order (a family may start again, for its next sample).
    pub fn start(&mut self, k: usize) {
        debug_assert!(k >= self.ended, "family {k} after family {}", self.ended);
        let written = self.buf.written();
        for end in self.ends.iter_mut().take(k).skip(self.ended) {
            *end = written;
        }
        self.ended = self.ended.max(k);
    }

    /// Every family not ended yet ends here.
    fn finish(&mut self) {
        self.start(N);
    }

    /// Family `k`'s samples.
    pub fn family(&self, k: usize) -> &B::Slice {
        let start = if k == 0 { 0 } else { self.ends[k - 1] };
        self.buf.slice(start..self.ends[k])
    }
}

/// A row's kept samples: the row's key (`None`: a row that is never found again), what the
/// samples show (`S`) and the samples.
#[derive(Debug)]
pub struct Kept<K, S, B, const N: usize> {
    key: Option<K>,
    shown: S,
    families: Families<B, N>,
}

impl<K: Copy, S, B: Buffer, const N: usize> Kept<K, S, B, N> {
    pub fn key(&self) -> Option<K> {
        self.key
    }

    /// Family `k`'s samples.
    pub fn family(&self, k: usize) -> &B::Slice {
        self.families.family(k)
    }

    /// Every family's samples, one after the other.
    pub fn all(&self) -> &B {
        &self.families.buf
    }

    /// The samples' buffer, for tests that mark it to see whether it is written again.
    #[cfg(test)]
    pub fn buf_mut(&mut self) -> &mut B {
        &mut self.families.buf
    }
}

/// This scrape's rows encoded, each from its kept encoding of the last scrape where that
/// still shows the row; the kept encodings of rows that are gone are dropped. `key` finds a
/// row's kept encoding (rows without a key are always encoded), `shown` is what a row's
/// samples show (they are kept while it is unchanged), and `write` encodes a row's
/// families into an empty [`Families`], calling `start` before each family's samples.
pub fn encode<K, S, B, R, const N: usize>(
    last: Vec<Kept<K, S, B, N>>,
    rows: impl IntoIterator<Item = R>,
    key: impl Fn(&R) -> Option<K>,
    shown: impl Fn(&R) -> S,
    mut write: impl FnMut(&R, &mut Families<B, N>),
) -> Vec<Kept<K, S, B, N>>
where
    K: Ord + Copy,
    S: PartialEq,
    B: Buffer,
{
    let rows = rows.into_iter();
    let mut kept = Vec::with_capacity(rows.size_hint().0);
    let mut last = last.into_iter().peekable();
    for row in rows {
        let key = key(&row);
        // Kept encodings of rows before this one (and any without a key) are gone.
        let found = key.and_then(|key| {
            while last.next_if(|k| k.key.is_none_or(|k| k < key)).is_some() {}
            last.next_if(|k| k.key == Some(key))
        });
        let shown = shown(&row);
        let entry = match found {
            Some(found) if found.shown == shown => found,
            found => {
                // Encoded again into the same buffer, or into a new one.
                let mut families = found.map(|f| f.families).unwrap_or_default();
                families.clear();
                write(&row, &mut families);
                families.finish();
                Kept {
                    key,
                    shown,
                    families,
                }
            }
        };
        kept.push(entry);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row: (key, value); its text has one family per digit of the value that is not 0.
    type Row = (Option<u32>, u32);

    fn write(row: &Row, f: &mut Families<String, 3>) {
        for k in 0..3 {
            let digit = row.1 / 10u32.pow(2 - k as u32) % 10;
            if digit != 0 {
                f.start(k);
                f.buf.push_str(&format!("{k}:{digit} "));
            }
        }
    }

    fn encode_rows(
        last: Vec<Kept<u32, u32, String, 3>>,
        rows: &[Row],
    ) -> Vec<Kept<u32, u32, String, 3>> {
        encode(last, rows.iter().copied(), |r| r.0, |r| r.1, write)
    }

    fn texts(kept: &[Kept<u32, u32, String, 3>]) -> Vec<&str> {
        kept.iter().map(|k| k.all().as_str()).collect()
    }

    #[test]
    fn families_end_where_the_next_one_starts_and_skipped_ones_are_empty() {
        let kept = encode_rows(Vec::new(), &[(Some(1), 102)]);
        assert_eq!(kept[0].family(0), "0:1 ");
        assert_eq!(kept[0].family(1), "", "a family without samples");
        assert_eq!(kept[0].family(2), "2:2 ");
        let none = encode_rows(Vec::new(), &[(Some(1), 0)]);
        assert!((0..3).all(|k| none[0].family(k).is_empty()));
    }

    #[test]
    fn rows_that_show_the_same_keep_their_encoding_and_the_others_are_encoded_again() {
        let first = [(Some(10), 111), (Some(20), 222), (Some(30), 303)];
        let mut kept = encode_rows(Vec::new(), &first);
        for k in &mut kept {
            k.buf_mut().push('#');
        }
        // 10 gone, 20 unchanged, 25 new, 30 changed, 40 new; an unkeyed row last.
        let second = [
            (Some(20), 222),
            (Some(25), 5),
            (Some(30), 330),
            (Some(40), 111),
            (None, 222),
        ];
        let kept = encode_rows(kept, &second);
        assert_eq!(
            texts(&kept),
            [
                "0:2 1:2 2:2 #",
                "2:5 ",
                "0:3 1:3 ",
                "0:1 1:1 2:1 ",
                "0:2 1:2 2:2 "
            ],
            "only 20 keeps its marked encoding; 40 is not 10's"
        );
        assert_eq!(kept[2].family(1), "1:3 ");
        assert_eq!(kept[4].key(), None);
        // A kept encoding without a key, first among the last ones, is passed over: the
        // rows after it still find theirs.
        let mut kept = kept;
        kept.rotate_right(1);
        assert_eq!(kept[0].key(), None);
        for k in &mut kept {
            k.buf_mut().push('!');
        }
        let kept = encode_rows(kept, &second[..4]);
        assert!(kept.iter().all(|k| k.all().ends_with('!')), "all kept");
        // Everything gone, then back: encoded anew.
        let kept = encode_rows(kept, &[]);
        assert!(kept.is_empty());
        let kept = encode_rows(kept, &first);
        assert_eq!(texts(&kept), ["0:1 1:1 2:1 ", "0:2 1:2 2:2 ", "0:3 2:3 "]);
    }
}
