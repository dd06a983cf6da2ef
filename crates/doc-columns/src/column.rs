//! A column of [`crate::Columns`]: packed values with the end offset of each.

use std::ops::Range;

use crate::Error;

/// Packed values with the end offset of each; `present` is empty for a column
/// whose values are never absent (ids).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Column<T> {
    pub present: Vec<bool>,
    pub data: T,
    pub ends: Vec<u32>,
}

pub type StrColumn = Column<String>;
pub type BytesColumn = Column<Vec<u8>>;

/// What a column packs: text or bytes.
pub trait Packed: AsRef<[u8]> {
    /// Appends `other[range]` (a range of whole values).
    fn append_range(&mut self, other: &Self, range: Range<usize>);
}

impl Packed for String {
    fn append_range(&mut self, other: &String, range: Range<usize>) {
        self.push_str(&other[range]);
    }
}

impl Packed for Vec<u8> {
    fn append_range(&mut self, other: &Vec<u8>, range: Range<usize>) {
        self.extend_from_slice(&other[range]);
    }
}

impl<T: Packed> Column<T> {
    /// The byte range of entry `i` (which must exist).
    pub fn range(&self, i: usize) -> Range<usize> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        start..self.ends[i] as usize
    }

    /// Whether entry `i` is present (always, in a column without flags).
    pub fn is_present(&self, i: usize) -> bool {
        self.present.is_empty() || self.present[i]
    }

    /// Appends entries `docs` of `other` (a column of valid columns): their
    /// data in one copy, their offsets moved to this column's end.
    pub fn extend_range(&mut self, other: &Column<T>, docs: Range<usize>) {
        if docs.is_empty() {
            return;
        }
        let from = if docs.start == 0 {
            0
        } else {
            other.ends[docs.start - 1]
        };
        let to = other.ends[docs.end - 1];
        let base = self.data.as_ref().len() as u32;
        self.data
            .append_range(&other.data, from as usize..to as usize);
        self.ends.extend(
            other.ends[docs.clone()]
                .iter()
                .map(|&end| end - from + base),
        );
        if !other.present.is_empty() {
            self.present.extend_from_slice(&other.present[docs]);
        }
    }

    /// Checks `n` entries, non-decreasing offsets that end at the data's length,
    /// and that absent entries are empty.
    ///
    /// # Errors
    /// Names the column, the first entry at fault (when one is) and why.
    pub fn check(&self, name: &'static str, n: usize, optional: bool) -> Result<(), Error> {
        if self.ends.len() != n {
            return Err(Error::column(
                name,
                format!("{} entries for {n} documents", self.ends.len()),
            ));
        }
        if optional && self.present.len() != n {
            return Err(Error::column(
                name,
                format!("{} presence flags for {n} documents", self.present.len()),
            ));
        }
        let mut previous = 0;
        for (i, &end) in self.ends.iter().enumerate() {
            if end < previous {
                return Err(Error::entry(name, i, "offsets go backwards"));
            }
            if optional && !self.present[i] && end != previous {
                return Err(Error::entry(name, i, "absent but has data"));
            }
            previous = end;
        }
        let len = self.data.as_ref().len();
        if previous as usize != len {
            return Err(Error::column(
                name,
                format!("offsets end at {previous}, data is {len} bytes"),
            ));
        }
        Ok(())
    }
}

impl StrColumn {
    /// Appends an entry, absent for `None`.
    pub fn push(&mut self, value: Option<&str>) {
        self.present.push(value.is_some());
        self.data.push_str(value.unwrap_or(""));
        self.ends.push(self.data.len() as u32);
    }

    /// Appends a value that is never absent (an id).
    pub fn push_required(&mut self, value: &str) {
        self.data.push_str(value);
        self.ends.push(self.data.len() as u32);
    }

    /// Entry `i` (which must exist), `None` when absent.
    pub fn get(&self, i: usize) -> Option<&str> {
        self.is_present(i).then(|| &self.data[self.range(i)])
    }

    /// [`Column::check`], and that every offset falls on a UTF-8 boundary.
    ///
    /// # Errors
    /// As [`Column::check`], or the first entry whose span splits a character.
    pub fn check_str(&self, name: &'static str, n: usize, optional: bool) -> Result<(), Error> {
        self.check(name, n, optional)?;
        match self
            .ends
            .iter()
            .position(|&end| !self.data.is_char_boundary(end as usize))
        {
            Some(i) => Err(Error::entry(
                name,
                i,
                "span does not fall on a UTF-8 boundary",
            )),
            None => Ok(()),
        }
    }
}

impl BytesColumn {
    /// Appends an entry, absent for `None`.
    pub fn push(&mut self, value: Option<&[u8]>) {
        self.present.push(value.is_some());
        self.data.extend_from_slice(value.unwrap_or(&[]));
        self.ends.push(self.data.len() as u32);
    }

    /// Entry `i` (which must exist), `None` when absent.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.is_present(i).then(|| &self.data[self.range(i)])
    }
}
