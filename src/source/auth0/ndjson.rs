//! The export file: gzip-compressed NDJSON, one user a line, decoded as it
//! downloads. Nothing but the current line is held, and a line longer than
//! `source.max_resource_bytes` fails the read, so a damaged file cannot fill
//! memory. The gzip trailer (length and CRC-32) proves the file arrived whole.

use std::io::{self, Write};

use flate2::write::GzDecoder;

use super::decode::Auth0User;
use crate::source::paged::Entry;

/// Takes the compressed file piece by piece and hands out the users decoded so far.
pub struct ExportDecoder {
    gunzip: GzDecoder<Lines>,
}

/// The decompressed side: cuts lines and decodes each.
struct Lines {
    partial: Vec<u8>,
    max_line_bytes: usize,
    line: usize,
    decoded: Vec<Entry>,
}

impl ExportDecoder {
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            gunzip: GzDecoder::new(Lines {
                partial: Vec::new(),
                max_line_bytes,
                line: 0,
                decoded: Vec::new(),
            }),
        }
    }

    /// Decompresses `compressed` and returns the users of the lines it completed.
    pub fn feed(&mut self, compressed: &[u8]) -> Result<Vec<Entry>, String> {
        self.gunzip
            .write_all(compressed)
            .map_err(|err| err.to_string())?;
        Ok(std::mem::take(&mut self.gunzip.get_mut().decoded))
    }

    /// Checks the file ended where gzip says it does and returns the last users.
    pub fn finish(self) -> Result<Vec<Entry>, String> {
        let mut lines = self
            .gunzip
            .finish()
            .map_err(|err| format!("the export file is cut off or damaged: {err}"))?;
        let last = std::mem::take(&mut lines.partial);
        lines.decode(&last).map_err(|err| err.to_string())?;
        Ok(lines.decoded)
    }
}

impl Lines {
    fn decode(&mut self, line: &[u8]) -> io::Result<()> {
        self.line += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let user: Auth0User = serde_json::from_slice(line).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line {} of the export file is not a user: {err}", self.line),
            )
        })?;
        self.decoded.push(user.into_user());
        Ok(())
    }
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            if self.partial.is_empty() {
                self.check_length(end)?;
                self.decode(&rest[..end])?;
            } else {
                self.check_length(self.partial.len() + end)?;
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..end]);
                self.decode(&line)?;
            }
            rest = &rest[end + 1..];
        }
        self.check_length(self.partial.len() + rest.len())?;
        self.partial.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn check_length(&self, length: usize) -> io::Result<()> {
        if length > self.max_line_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "line {} of the export file is longer than source.max_resource_bytes = {}",
                    self.line + 1,
                    self.max_line_bytes
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;

    fn gzip(text: &str) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap()
    }

    fn users(text: &str) -> String {
        (0..text.len())
            .map(|i| format!("{{\"user_id\":\"u{i}\",\"email\":\"u{i}@x.com\"}}\n"))
            .collect()
    }

    #[test]
    fn a_file_fed_in_small_pieces_gives_every_user_once() {
        let text = users(&"x".repeat(500));
        let file = gzip(&format!("{text}{{\"user_id\":\"last\",\"blocked\":true}}"));
        let mut decoder = ExportDecoder::new(1024);
        let mut read = Vec::new();
        for piece in file.chunks(7) {
            read.extend(decoder.feed(piece).unwrap());
        }
        read.extend(decoder.finish().unwrap());
        assert_eq!(read.len(), 501);
        let last = read.pop().unwrap().unwrap();
        assert_eq!((last.subject.as_str(), last.active), ("last", false));
        assert_eq!(read[0].as_ref().unwrap().subject.as_str(), "u0");
    }

    #[test]
    fn a_cut_off_file_is_refused() {
        let file = gzip(&users(&"x".repeat(200)));
        let mut decoder = ExportDecoder::new(1024);
        decoder.feed(&file[..file.len() / 2]).unwrap();
        let err = decoder.finish().unwrap_err();
        assert!(err.contains("cut off or damaged"), "{err}");
        let mut no_trailer = ExportDecoder::new(1024);
        no_trailer.feed(&file[..file.len() - 4]).unwrap();
        assert!(
            no_trailer.finish().is_err(),
            "the length in the trailer is missing"
        );
    }

    /// Every user of `file`, or the first error, from feeding or from the end.
    fn decode_all(file: &[u8]) -> Result<Vec<Entry>, String> {
        let mut decoder = ExportDecoder::new(1024);
        let mut read = decoder.feed(file)?;
        read.extend(decoder.finish()?);
        Ok(read)
    }

    #[test]
    fn a_long_line_or_a_broken_one_is_refused() {
        let err = decode_all(&gzip(&"y".repeat(5000))).unwrap_err();
        assert!(
            err.contains(
                "line 1 of the export file is longer than source.max_resource_bytes = 1024"
            ),
            "{err}"
        );
        let err = decode_all(&gzip("{\"user_id\":\"a\"}\n{not json}\n")).unwrap_err();
        assert!(
            err.contains("line 2 of the export file is not a user"),
            "{err}"
        );
    }
}
