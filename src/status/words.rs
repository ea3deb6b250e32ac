//! What people read for a value: the contract's words table and number,
//! duration and time-zone formats ([`wardgate_contract::words`]), shared
//! with the operations centre's pages. Its tests here check that every
//! value every source of this gateway produces has words.

pub use wardgate_contract::words::*;

#[cfg(test)]
mod tests;
