//! Lists in request bodies that a front decodes only so far: a batch's items. A body of the
//! largest allowed size can hold millions of tiny items (`[{},{},…]`); decoding them all
//! before the batch is refused for its length would let any caller with a token make the
//! node allocate hundreds of megabytes. [`AtMost`] keeps the first `N` items and skips the
//! rest without keeping them, so a front still sees that the list was too long (it holds
//! `N` items and [`AtMost::overflowed`] is set) and refuses it the usual way.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, IgnoredAny, SeqAccess, Visitor};

/// The first `N` items of a list (the rest were checked to be JSON, and dropped).
#[derive(Debug, Clone)]
pub struct AtMost<T, const N: usize> {
    pub items: Vec<T>,
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for AtMost<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Items<T, N> {
            type Value = AtMost<T, N>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of at most {N} items")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(N));
                while items.len() < N {
                    match seq.next_element()? {
                        Some(item) => items.push(item),
                        None => return Ok(AtMost { items }),
                    }
                }
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(AtMost { items })
            }
        }
        d.deserialize_seq(Items::<T, N>(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_n() {
        let a: AtMost<u8, 3> = serde_json::from_str("[1,2]").unwrap();
        assert_eq!(a.items, vec![1, 2]);
        let a: AtMost<u8, 3> = serde_json::from_str("[1,2,3,4]").unwrap();
        assert_eq!(a.items, vec![1, 2, 3]);
        let many = format!("[{}]", vec!["{}"; 100_000].join(","));
        let a: AtMost<serde_json::Value, 3> = serde_json::from_str(&many).unwrap();
        assert_eq!(a.items.len(), 3);
        // Items past N are still checked to be JSON.
        assert!(serde_json::from_str::<AtMost<u8, 1>>("[1, 2, ]").is_err());
    }
}
