//! Files an operator names (certificates, keys, CA bundles, results), read with a cap on their
//! size: a wrong path such as `/dev/zero` must end in a clear error, not in memory exhaustion,
//! and `/dev/urandom` must not keep a start waiting forever.

use std::io::Read;
use std::path::Path;

/// Reads all of `path`, or refuses a file longer than `cap` bytes with a message that names the
/// file (after `what` it is, such as `--tls-cert`, if not empty) and the cap.
pub fn read_capped(path: &Path, cap: u64, what: &str) -> Result<Vec<u8>, String> {
    let name = match what {
        "" => path.display().to_string(),
        what => format!("{what} {}", path.display()),
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(cap + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {name}: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(format!(
            "{name}: larger than {}, the most read from such a file",
            crate::units::format_bytes(cap as f64)
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_files_are_refused_at_the_cap() {
        let err = read_capped(Path::new("/dev/zero"), 1 << 20, "--tls-cert").unwrap_err();
        assert_eq!(
            err,
            "--tls-cert /dev/zero: larger than 1.00 MiB, the most read from such a file"
        );
        assert!(read_capped(Path::new("/dev/urandom"), 4096, "--tls-key").is_err());
    }

    #[test]
    fn a_file_within_the_cap_is_read_whole() {
        let path = std::env::temp_dir().join(format!("ricochet-files-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_capped(&path, 10, "x").unwrap(), b"0123456789");
        assert!(read_capped(&path, 9, "x").is_err());
        std::fs::remove_file(&path).unwrap();
        let err = read_capped(&path, 9, "--tls-ca").unwrap_err();
        assert!(err.starts_with("cannot read --tls-ca /"), "{err}");
        let err = read_capped(&path, 9, "").unwrap_err();
        assert!(err.starts_with(&format!("cannot read {}: ", path.display())), "{err}");
    }
}
