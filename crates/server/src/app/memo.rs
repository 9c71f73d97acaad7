//! [`Latest`]: a value derived from a shared record, kept per thread for the last record it
//! was derived from. Stepgate's read caches hand out the same `Arc` for a record until it
//! changes or expires, and a keep-alive client asks for the same record request after
//! request, so keeping the last derivation saves building it again on each.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

/// The value last derived on this thread, the record it came from (held weakly: the
/// allocation stays reserved while the weak reference lives, so a live record at the same
/// address is the same record, and a dropped or replaced one never matches) and an extra
/// key (a runtime generation, say) that must match too.
pub struct Latest<R, V> {
    last: RefCell<Option<Kept<R, V>>>,
}

/// The record a value was derived from, the key, and the value.
type Kept<R, V> = (Weak<R>, u64, Arc<V>);

impl<R, V> Default for Latest<R, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R, V> Latest<R, V> {
    /// Nothing kept yet.
    pub const fn new() -> Self {
        Latest {
            last: RefCell::new(None),
        }
    }

    /// The value for `record` under `key`: the one kept when it was derived from this very
    /// record under the same key, otherwise `derive(record)`, kept in its place.
    pub fn get(&self, record: &Arc<R>, key: u64, derive: impl FnOnce(&R) -> V) -> Arc<V> {
        let mut last = self.last.borrow_mut();
        if let Some((from, k, value)) = last.as_ref() {
            if *k == key
                && std::ptr::eq(from.as_ptr(), Arc::as_ptr(record))
                && from.strong_count() > 0
            {
                return value.clone();
            }
        }
        let value = Arc::new(derive(record));
        *last = Some((Arc::downgrade(record), key, value.clone()));
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_reused_only_for_the_same_live_record_and_key() {
        let memo: Latest<String, usize> = Latest::new();
        let built = std::cell::Cell::new(0);
        let derive = |s: &String| {
            built.set(built.get() + 1);
            s.len()
        };
        let a = Arc::new("abc".to_string());
        assert_eq!(*memo.get(&a, 1, derive), 3);
        assert_eq!(*memo.get(&a, 1, derive), 3);
        assert_eq!(built.get(), 1, "the same record and key: kept");
        assert_eq!(*memo.get(&a, 2, derive), 3);
        assert_eq!(built.get(), 2, "another key: derived again");
        // An equal record in another allocation is another record.
        let b = Arc::new("abc".to_string());
        memo.get(&b, 2, derive);
        assert_eq!(built.get(), 3);
        // A record changed through make_mut moves to a new allocation: derived again.
        let mut c = Arc::new("abcd".to_string());
        assert_eq!(*memo.get(&c, 2, derive), 4);
        Arc::make_mut(&mut c).push('e');
        assert_eq!(*memo.get(&c, 2, derive), 5);
    }
}
