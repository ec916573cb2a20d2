//! A vector that costs one pointer when empty, for what most mappings never have (FILTERs,
//! PEERs): a `Vec` is three words in every endpoint of the table, and the table holds
//! 100 000 of them (benches/table_memory.rs). The items live behind a second box, which only
//! the few endpoints that have any pay for.

use std::fmt;
use std::ops::{Deref, DerefMut};

// The box around the Vec is the point: `Option<Box<_>>` is one word, a Vec three.
#[allow(clippy::box_collection)]
#[derive(Clone, PartialEq, Eq)]
pub struct ThinVec<T>(Option<Box<Vec<T>>>);

impl<T> ThinVec<T> {
    pub const fn new() -> ThinVec<T> {
        ThinVec(None)
    }

    pub fn push(&mut self, item: T) {
        self.0.get_or_insert_with(Box::default).push(item);
    }

    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        if let Some(v) = &mut self.0 {
            v.retain(keep);
            if v.is_empty() {
                self.0 = None;
            }
        }
    }

    pub fn clear(&mut self) {
        self.0 = None;
    }
}

impl<T> Default for ThinVec<T> {
    fn default() -> Self {
        ThinVec::new()
    }
}

impl<T> From<Vec<T>> for ThinVec<T> {
    fn from(v: Vec<T>) -> Self {
        ThinVec((!v.is_empty()).then(|| Box::new(v)))
    }
}

impl<T> FromIterator<T> for ThinVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        Vec::from_iter(items).into()
    }
}

impl<T> Deref for ThinVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl<T> DerefMut for ThinVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.0 {
            Some(v) => v.as_mut_slice(),
            None => &mut [],
        }
    }
}

impl<'a, T> IntoIterator for &'a ThinVec<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: fmt::Debug> fmt::Debug for ThinVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_one_word_and_holds_nothing() {
        assert_eq!(std::mem::size_of::<ThinVec<[u8; 96]>>(), 8);
        let v: ThinVec<u8> = Vec::new().into();
        assert!(v.is_empty());
        assert_eq!(
            v,
            ThinVec::new(),
            "an empty vector converts to the empty form"
        );
    }

    #[test]
    fn behaves_as_a_vector_and_drops_its_box_when_emptied() {
        let mut v = ThinVec::new();
        v.push(1);
        v.push(2);
        v.push(3);
        assert_eq!(&*v, &[1, 2, 3]);
        v[1] = 20;
        v.retain(|&x| x != 1);
        assert_eq!(&*v, &[20, 3]);
        assert_eq!(format!("{v:?}"), "[20, 3]");
        v.retain(|_| false);
        assert_eq!(v, ThinVec::new(), "emptied by retain: back to no box");
        let w: ThinVec<u8> = (1..=2).collect();
        assert_eq!(w.iter().copied().sum::<u8>(), 3);
    }
}
