//! A reader that fails once a line runs longer than a bound, so that an export
//! with no line breaks (a damaged file, a binary one) cannot make the reader
//! hold it all in memory.

use std::io::{self, Read};

pub struct LineBound<R> {
    inner: R,
    /// Bytes since the last line break.
    run: usize,
    max_line_bytes: usize,
}

impl<R: Read> LineBound<R> {
    pub fn new(inner: R, max_line_bytes: usize) -> Self {
        Self {
            inner,
            run: 0,
            max_line_bytes,
        }
    }
}

impl<R: Read> Read for LineBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        let mut longest = 0;
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &buf[..read]) {
            longest = longest.max(self.run + end - start);
            self.run = 0;
            start = end + 1;
        }
        self.run += read - start;
        if longest.max(self.run) > self.max_line_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a line is longer than source.max_resource_bytes = {}",
                    self.max_line_bytes
                ),
            ));
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_within_the_bound_pass_and_a_longer_one_fails() {
        let text = "short\nline\n".repeat(1000);
        let mut read = String::new();
        LineBound::new(text.as_bytes(), 8)
            .read_to_string(&mut read)
            .expect("every line is short");
        assert_eq!(read, text);
        let long = format!("ok\n{}\nok\n", "x".repeat(100));
        let err = LineBound::new(long.as_bytes(), 64)
            .read_to_string(&mut String::new())
            .expect_err("a line over the bound");
        assert!(
            err.to_string().contains("source.max_resource_bytes = 64"),
            "{err}"
        );
    }

    #[test]
    fn an_endless_line_stops_at_the_bound() {
        let endless = io::repeat(b'x');
        let err = LineBound::new(endless, 1 << 20)
            .read_to_end(&mut Vec::new())
            .expect_err("stopped");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
