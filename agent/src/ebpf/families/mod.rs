//! The probe families, one module each. Every file here is registered by `build.rs`:
//! module `foo_bar` holds `pub struct FooBar`, which implements
//! [`Family`](super::family::Family), and `ALL` lists them in load order (by module name).
//! Nothing else in the agent lists families by hand, so adding a family is adding its file.
include!(concat!(env!("OUT_DIR"), "/families.rs"));
