//! Short strings kept inline, so the forward-auth answer (token id, name, expiry) is built
//! without touching the allocator: [`InlineText`] holds up to 64 bytes in place, and
//! [`Text`] is that or, for a longer string, a boxed one.

/// Bytes an [`InlineText`] holds.
pub const INLINE_CAPACITY: usize = 64;

/// Up to [`INLINE_CAPACITY`] bytes of UTF-8, in place. Unused bytes stay zero.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InlineText {
    len: u8,
    buf: [u8; INLINE_CAPACITY],
}

impl InlineText {
    pub const fn empty() -> Self {
        InlineText {
            len: 0,
            buf: [0; INLINE_CAPACITY],
        }
    }

    /// `None` when `s` is longer than [`INLINE_CAPACITY`] bytes.
    pub fn new(s: &str) -> Option<Self> {
        let mut t = InlineText::empty();
        t.push_str(s)?;
        Some(t)
    }

    /// Appends `s`; `None` (and nothing appended) when it does not fit.
    pub fn push_str(&mut self, s: &str) -> Option<()> {
        let at = usize::from(self.len);
        let end = at.checked_add(s.len()).filter(|&e| e <= INLINE_CAPACITY)?;
        self.buf[at..end].copy_from_slice(s.as_bytes());
        self.len = u8::try_from(end).ok()?;
        Some(())
    }

    /// Appends one ASCII byte; `None` when full or not ASCII.
    pub fn push_ascii(&mut self, b: u8) -> Option<()> {
        if !b.is_ascii() {
            return None;
        }
        let at = usize::from(self.len);
        *self.buf.get_mut(at)? = b;
        self.len += 1;
        Some(())
    }

    pub fn as_str(&self) -> &str {
        // Only whole UTF-8 strings and ASCII bytes are ever appended.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }
}

impl std::fmt::Debug for InlineText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A string inline when it fits, boxed when it does not.
#[derive(Clone)]
pub enum Text {
    Inline(InlineText),
    Boxed(Box<str>),
}

impl Text {
    pub fn as_str(&self) -> &str {
        match self {
            Text::Inline(t) => t.as_str(),
            Text::Boxed(s) => s,
        }
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        match InlineText::new(s) {
            Some(t) => Text::Inline(t),
            None => Text::Boxed(s.into()),
        }
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        match InlineText::new(&s) {
            Some(t) => Text::Inline(t),
            None => Text::Boxed(s.into_boxed_str()),
        }
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_up_to_capacity_then_boxed() {
        let fits = "é".repeat(32);
        assert_eq!(fits.len(), INLINE_CAPACITY);
        assert!(matches!(Text::from(fits.as_str()), Text::Inline(_)));
        assert_eq!(&*Text::from(fits.as_str()), fits);
        let longer = format!("{fits}x");
        assert!(matches!(Text::from(longer.as_str()), Text::Boxed(_)));
        assert_eq!(&*Text::from(longer.clone()), longer);
        assert_eq!(Text::from("a"), Text::from(String::from("a")));

        let mut t = InlineText::new("ab").unwrap();
        assert!(t.push_str(&"x".repeat(63)).is_none(), "would overflow");
        assert_eq!(t.as_str(), "ab", "nothing appended on overflow");
        assert!(t.push_ascii(0xc3).is_none());
        t.push_ascii(b'c').unwrap();
        assert_eq!(t.as_str(), "abc");
        assert_eq!(InlineText::empty().as_str(), "");
    }
}
