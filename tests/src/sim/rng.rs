//! The simulation's only source of randomness: splitmix64 seeded from the run's seed, split
//! into independent streams. Invariant: one seed gives the same numbers on every platform and
//! every run; nothing in the simulation reads a clock or an unordered collection to decide.

/// A splitmix64 generator (Steele, Lea and Flood, OOPSLA 2014): tiny, fast in a debug build,
/// and good enough to schedule faults.
#[derive(Clone, Debug)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng { state: seed }
    }

    /// An independent generator for one concern (faults, network, clients), so that drawing
    /// more numbers for one concern does not shift the others.
    pub fn stream(seed: u64, name: &str) -> SimRng {
        let mut mixed = seed;
        for byte in name.bytes() {
            mixed = mix(mixed ^ u64::from(byte));
        }
        SimRng::new(mixed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// Uniform in `0..bound` (0 when `bound` is 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low) + 1)
    }

    /// True `percent` times out of 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Uniform index into a slice of `len` elements (`len` must be positive).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for index in (1..items.len()).rev() {
            let other = self.index(index + 1);
            items.swap(index, other);
        }
    }
}

/// The splitmix64 finaliser: a bijection of u64 that spreads every input bit.
pub fn mix(value: u64) -> u64 {
    let mut z = value;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
