//! Container IDs and Docker-style random names (`adjective_surname`).

use rand::Rng;

const ADJECTIVES: &[&str] = &[
    "agile", "amazing", "bold", "brave", "bright", "calm", "clever", "cool", "crisp", "curious",
    "daring", "eager", "elated", "elegant", "epic", "fervent", "fond", "gallant", "gentle",
    "happy", "hardy", "hopeful", "humble", "jolly", "keen", "kind", "lively", "loving", "lucid",
    "merry", "mighty", "modest", "nifty", "noble", "patient", "peaceful", "placid", "plucky",
    "proud", "quick", "quiet", "relaxed", "serene", "sharp", "sleepy", "smart", "stoic", "sunny",
    "swift", "tender", "tidy", "upbeat", "vibrant", "vivid", "wizardly", "zealous",
];

/// Scientists, engineers and mathematicians.
const SURNAMES: &[&str] = &[
    "agnesi",
    "babbage",
    "bardeen",
    "bell",
    "bohr",
    "boole",
    "borg",
    "bose",
    "cerf",
    "chandra",
    "curie",
    "darwin",
    "dijkstra",
    "edison",
    "einstein",
    "euclid",
    "euler",
    "faraday",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "galileo",
    "gauss",
    "goldberg",
    "goodall",
    "hamilton",
    "hawking",
    "hertz",
    "hodgkin",
    "hopper",
    "hypatia",
    "jang",
    "jennings",
    "kalam",
    "kepler",
    "knuth",
    "kowalevski",
    "lamarr",
    "leakey",
    "liskov",
    "lovelace",
    "lumiere",
    "maxwell",
    "mccarthy",
    "meitner",
    "mendel",
    "minsky",
    "morse",
    "newton",
    "nobel",
    "noether",
    "pascal",
    "pasteur",
    "perlman",
    "planck",
    "ptolemy",
    "raman",
    "ritchie",
    "sammet",
    "shannon",
    "sinoussi",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "volta",
    "wiles",
    "wing",
    "wu",
    "yalow",
    "yonath",
];

/// Whether `s` has the form of a [`random_id`]: 64 lowercase hex digits.
pub fn is_full_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A random 64-hex-digit container ID whose 12-character short form is never all digits
/// (so it can never be mistaken for a number, as Docker guarantees).
pub fn random_id() -> String {
    let mut rng = rand::thread_rng();
    loop {
        let bytes: [u8; 32] = rng.gen();
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if !id[..12].bytes().all(|b| b.is_ascii_digit()) {
            return id;
        }
    }
}

/// A random `adjective_surname`; after `retry` collisions a digit is appended, as Docker does.
pub fn random_name(retry: u32) -> String {
    let mut rng = rand::thread_rng();
    let adjective = ADJECTIVES[rng.gen_range(0..ADJECTIVES.len())];
    let surname = SURNAMES[rng.gen_range(0..SURNAMES.len())];
    if retry > 0 {
        format!("{adjective}_{surname}{}", rng.gen_range(0..10))
    } else {
        format!("{adjective}_{surname}")
    }
}

/// Checks a user-supplied name against Docker's pattern `/?[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let name = name.strip_prefix('/').unwrap_or(name);
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    name.len() >= 2 && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        let id = random_id();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        let name = random_name(0);
        assert!(valid_name(&name), "{name}");
        assert!(valid_name("/web-1.a_b"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a"));
        assert!(!valid_name("a b"));
    }
}
