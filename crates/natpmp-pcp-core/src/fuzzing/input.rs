//! A reader that turns fuzzer bytes into structured choices. Once the bytes run out every
//! read returns zero, so any input decodes to some sequence of steps and mutations of one
//! field leave the others where they were.
//!
//! Written here instead of taking the `arbitrary` crate: the core stays free of a dependency
//! only the fuzzer wants, and the handful of reads below is all the targets need.

pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { rest: data }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// An index below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.u8()) % n
    }

    /// One of `choices`, or (for the last byte value range) a raw value read from the input:
    /// the interesting values come up often, and any value can still be reached.
    pub fn pick_u16(&mut self, choices: &[u16]) -> u16 {
        let i = self.below(choices.len() + 1);
        choices.get(i).copied().unwrap_or_else(|| self.u16())
    }

    pub fn pick_u32(&mut self, choices: &[u32]) -> u32 {
        let i = self.below(choices.len() + 1);
        choices.get(i).copied().unwrap_or_else(|| self.u32())
    }

    /// Up to `max` bytes: a length byte, then that many bytes (fewer if the input ends).
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let want = usize::from(self.u8()).min(max);
        let n = want.min(self.rest.len());
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        taken
    }

    /// A fixed-size array, zero-filled past the end of the input.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        for b in &mut a {
            *b = self.u8();
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_zero() {
        let mut i = Input::new(&[1, 2, 3]);
        assert_eq!(i.u16(), 0x0102);
        assert_eq!(i.u32(), 0x0300_0000);
        assert!(i.is_empty());
        assert_eq!(i.bytes(10), &[] as &[u8]);
        assert_eq!(i.array::<2>(), [0, 0]);
    }

    #[test]
    fn bytes_are_capped_by_length_byte_max_and_input() {
        let mut i = Input::new(&[200, 1, 2, 3]);
        assert_eq!(i.bytes(2), &[1, 2]);
        let mut i = Input::new(&[2, 9, 8, 7]);
        assert_eq!(i.bytes(64), &[9, 8]);
        assert_eq!(i.u8(), 7);
    }
}
