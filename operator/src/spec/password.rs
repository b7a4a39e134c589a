//! Password hashes: yescrypt hashing for `dockop hash-password`, verification, and the crypt(3) hash
//! syntax checks validation uses (`$y$` yescrypt, `$6$` SHA-512).

use yescrypt::{PasswordHasher, PasswordVerifier, Yescrypt};

/// The crypt(3) "base64" alphabet.
const CRYPT_B64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Length of a yescrypt hash field (32 bytes in crypt base64).
const YESCRYPT_HASH_LEN: usize = 43;
/// Length of a SHA-512 crypt hash field (64 bytes in crypt base64).
const SHA512_HASH_LEN: usize = 86;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Empty passwords are refused.
    #[error("the password is empty")]
    Empty,
    /// The hashing function failed (e.g. no system randomness for the salt).
    #[error("yescrypt failed: {0}")]
    Yescrypt(String),
}

/// Hashes `password` with yescrypt and a random 16-byte salt, using the default parameters Debian uses
/// (`j9T`: N = 4096, r = 32, p = 1), and returns the `$y$j9T$salt$hash` string `chpasswd -e` takes.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    if password.is_empty() {
        return Err(HashError::Empty);
    }
    let hash = Yescrypt::default()
        .hash_password(password.as_bytes())
        .map_err(|e| HashError::Yescrypt(e.to_string()))?;
    Ok(hash.as_str().to_owned())
}

/// Whether `password` matches `hash` (`$y$` yescrypt or `$6$` SHA-512 crypt). Malformed hashes never
/// match.
pub fn verify(password: &str, hash: &str) -> bool {
    if hash.starts_with("$y$") {
        Yescrypt::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok()
    } else if hash.starts_with("$6$") {
        sha_crypt::ShaCrypt::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok()
    } else {
        false
    }
}

fn is_crypt_b64(s: &str) -> bool {
    s.bytes().all(|b| CRYPT_B64.contains(&b))
}

/// Why a text is not a crypt(3) hash dockop accepts. The messages never quote the hash or its salt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashSyntaxError {
    /// `$y$` without exactly three `$`-separated fields after it.
    #[error(
        "a yescrypt hash has the form $y$PARAMS$SALT$HASH; this one has {0} field(s) after $y$"
    )]
    YescryptFields(usize),
    /// The yescrypt parameter field does not decode.
    #[error("the yescrypt parameters \"{0}\" are not valid (Debian's default is j9T)")]
    YescryptParams(String),
    /// The yescrypt salt is empty or not crypt base64.
    #[error("the yescrypt salt is empty or has characters outside [./0-9A-Za-z]")]
    YescryptSalt,
    /// The yescrypt hash part has the wrong length or alphabet (its length found).
    #[error(
        "the yescrypt hash part must be {YESCRYPT_HASH_LEN} characters of [./0-9A-Za-z], found {0}"
    )]
    YescryptSum(usize),
    /// `rounds=N` outside 1000-999999999 (the text after `rounds=`).
    #[error("rounds={0} is not valid: use 1000 to 999999999")]
    Rounds(String),
    /// `$6$` without `[rounds=N$]SALT$HASH`.
    #[error("a SHA-512 crypt hash has the form $6$[rounds=N$]SALT$HASH")]
    Sha512Fields,
    /// The SHA-512 salt is empty, too long or not crypt base64.
    #[error("the SHA-512 salt must be 1-16 characters of [./0-9A-Za-z]")]
    Sha512Salt,
    /// The SHA-512 hash part has the wrong length or alphabet (its length found).
    #[error(
        "the SHA-512 hash part must be {SHA512_HASH_LEN} characters of [./0-9A-Za-z], found {0}"
    )]
    Sha512Sum(usize),
    /// Another crypt scheme (its id, at most 8 characters).
    #[error("hashes of type ${0}$ are not accepted: only $y$ (yescrypt) and $6$ (SHA-512)")]
    Scheme(String),
    /// Not a crypt(3) hash at all.
    #[error("this is not a crypt(3) hash: it must start with $y$ (yescrypt) or $6$ (SHA-512)")]
    NotCrypt,
}

/// Checks the shape of a crypt(3) hash dockop accepts: `$y$PARAMS$SALT$HASH` (yescrypt, 43-character
/// hash) or `$6$[rounds=N$]SALT$HASH` (SHA-512 crypt, salt of 1-16 characters, 86-character hash). The
/// error names what is wrong.
pub fn check_hash_syntax(hash: &str) -> Result<(), HashSyntaxError> {
    if let Some(rest) = hash.strip_prefix("$y$") {
        let fields: Vec<&str> = rest.split('$').collect();
        let [params, salt, sum] = fields.as_slice() else {
            return Err(HashSyntaxError::YescryptFields(fields.len()));
        };
        if params.is_empty() || !is_crypt_b64(params) || params.parse::<yescrypt::Params>().is_err()
        {
            return Err(HashSyntaxError::YescryptParams((*params).to_owned()));
        }
        if salt.is_empty() || !is_crypt_b64(salt) {
            return Err(HashSyntaxError::YescryptSalt);
        }
        if sum.len() != YESCRYPT_HASH_LEN || !is_crypt_b64(sum) {
            return Err(HashSyntaxError::YescryptSum(sum.len()));
        }
        return Ok(());
    }
    if let Some(rest) = hash.strip_prefix("$6$") {
        let mut fields: Vec<&str> = rest.split('$').collect();
        if let Some(first) = fields.first()
            && let Some(rounds) = first.strip_prefix("rounds=")
        {
            match rounds.parse::<u32>() {
                Ok(n) if (1000..=999_999_999).contains(&n) => {}
                _ => return Err(HashSyntaxError::Rounds(rounds.to_owned())),
            }
            fields.remove(0);
        }
        let [salt, sum] = fields.as_slice() else {
            return Err(HashSyntaxError::Sha512Fields);
        };
        if salt.is_empty() || salt.len() > 16 || !is_crypt_b64(salt) {
            return Err(HashSyntaxError::Sha512Salt);
        }
        if sum.len() != SHA512_HASH_LEN || !is_crypt_b64(sum) {
            return Err(HashSyntaxError::Sha512Sum(sum.len()));
        }
        return Ok(());
    }
    if hash.starts_with('$') {
        let id: String = hash
            .chars()
            .skip(1)
            .take_while(|c| *c != '$')
            .take(8)
            .collect();
        return Err(HashSyntaxError::Scheme(id));
    }
    Err(HashSyntaxError::NotCrypt)
}

/// SHA-512 crypt rounds above which every password check takes seconds: glibc's default is 5,000 (a few
/// milliseconds); 5,000,000 is a thousand times that, about 2-5 s of CPU per login, and the maximum
/// (999,999,999) is many minutes.
pub const MAX_SANE_SHA512_ROUNDS: u64 = 5_000_000;

/// yescrypt memory per password check (128 * N * r * p bytes) above which logins are slow or fail under
/// a memory limit: Debian's default (`j9T`) uses 16 MiB; this is 64 times that.
pub const MAX_SANE_YESCRYPT_BYTES: u64 = 1 << 30;

/// Why an otherwise valid hash makes every password check slow (`None` when its cost is usual). Setting
/// it (`chpasswd -e`) is quick; each login, `su` or `sudo` with it pays the cost, and so does anyone who
/// sends wrong passwords (a denial of service). A warning, not an error: the cost is the owner's choice.
pub fn hash_cost_warning(hash: &str) -> Option<String> {
    if let Some(rest) = hash.strip_prefix("$6$") {
        let rounds: u64 = rest
            .split('$')
            .next()?
            .strip_prefix("rounds=")?
            .parse()
            .ok()?;
        return (rounds > MAX_SANE_SHA512_ROUNDS).then(|| {
            format!(
                "rounds={rounds} makes every password check run {rounds} SHA-512 rounds (about {} s of CPU per login at ~1 million rounds/s; glibc's default is 5000)",
                rounds / 1_000_000
            )
        });
    }
    let params: yescrypt::Params = hash.strip_prefix("$y$")?.split('$').next()?.parse().ok()?;
    let bytes = 128u64
        .saturating_mul(params.n())
        .saturating_mul(u64::from(params.r()))
        .saturating_mul(u64::from(params.p()));
    (bytes > MAX_SANE_YESCRYPT_BYTES).then(|| {
        format!(
            "these yescrypt parameters make every password check use {} MiB of memory (Debian's default j9T uses 16 MiB): logins are slow, and fail under a memory limit",
            bytes >> 20
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn costly_hashes_are_named() {
        let sum86 = "a".repeat(86);
        let slow = format!("$6$rounds=999999999$salt${sum86}");
        check_hash_syntax(&slow).unwrap();
        let why = hash_cost_warning(&slow).expect("warned");
        assert!(
            why.contains("rounds=999999999") && why.contains("999 s"),
            "{why}"
        );
        assert!(hash_cost_warning(&format!("$6$rounds=5000000$salt${sum86}")).is_none());
        assert!(hash_cost_warning(&format!("$6$rounds=5000001$salt${sum86}")).is_some());
        assert!(hash_cost_warning(&format!("$6$salt${sum86}")).is_none());
        let default = hash_password("pw").unwrap();
        assert!(hash_cost_warning(&default).is_none(), "{default}");
        let huge = yescrypt::Params::new(yescrypt::Mode::default(), 1 << 20, 32, 1).unwrap();
        let sum43 = "a".repeat(43);
        let big = format!("$y${huge}$salt${sum43}");
        check_hash_syntax(&big).unwrap();
        assert!(
            hash_cost_warning(&big)
                .expect("warned")
                .contains("4096 MiB")
        );
    }

    #[test]
    fn hash_then_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$y$j9T$"), "{hash}");
        check_hash_syntax(&hash).unwrap();
        assert!(verify("correct horse", &hash));
        assert!(!verify("wrong horse", &hash));
        assert_ne!(
            hash,
            hash_password("correct horse").unwrap(),
            "salts are random"
        );
    }

    #[test]
    fn refuses_empty() {
        assert!(matches!(hash_password(""), Err(HashError::Empty)));
    }

    #[test]
    fn sha512_known_answer() {
        // From the SHA-crypt specification test vectors.
        let hash = "$6$rounds=5000$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        check_hash_syntax(hash).unwrap();
        assert!(verify("Hello world!", hash));
        assert!(!verify("Hello world", hash));
    }

    #[test]
    fn syntax_errors() {
        let good_sum = "a".repeat(43);
        for (hash, needle) in [
            ("hunter2", "not a crypt(3) hash"),
            ("$1$abc$def", "$1$ are not accepted"),
            ("$y$j9T$salt", "2 field(s)"),
            (&format!("$y$!!$salt${good_sum}") as &str, "parameters"),
            (&format!("$y$j9T$$${good_sum}"), "field(s)"),
            (&format!("$y$j9T$$x{good_sum}"), "salt"),
            ("$y$j9T$salt$short", "43 characters"),
            ("$6$salt$short", "86 characters"),
            ("$6$rounds=10$salt$x", "rounds=10"),
            ("$6$waytoolongsaltvalue$x", "1-16"),
        ] {
            let err = check_hash_syntax(hash).expect_err(hash).to_string();
            assert!(err.contains(needle), "{hash}: {err}");
        }
    }
}
