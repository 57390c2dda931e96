//! Every finding of the fuzz targets and of `tests/properties.rs`, replayed: each test feeds
//! the input that failed to the same check the fuzz target runs (`fuzz/src/checks.rs`), and
//! asserts the corrected behaviour directly. See the README's "Fuzzing" section.

// Only some checks have findings to replay.
#[allow(dead_code)]
#[path = "../fuzz/src/checks.rs"]
mod checks;

use gatehouse::reference::{ImageRef, ReferenceError};

/// Found by `image_reference`: an uppercase single-label registry near the length limit.
/// `FOO/` and 250 path characters is 254 characters as written, within distribution's 255, but
/// its canonical form `foo:443/…` (a single-label host keeps `:443`, or it would read back as a
/// Docker Hub namespace) is 258 and did not parse back to itself. A name whose canonical form
/// is over the limit is now refused like one written over it.
#[test]
fn canonical_form_over_the_length_limit_is_refused() {
    let input = format!("FOO/{}", "a".repeat(250));
    checks::image_reference(input.as_bytes());
    match ImageRef::parse(&input) {
        Err(ReferenceError::NameTooLong { len: 258, .. }) => {}
        other => panic!("{input:?} must be refused as too long once normalised, got {other:?}"),
    }

    // At the limit once canonical, it parses, and its canonical form parses to itself.
    let input = format!("FOO/{}", "a".repeat(247));
    checks::image_reference(input.as_bytes());
    let image = ImageRef::parse(&input).expect("255 characters once canonical");
    assert_eq!(image.name().len(), 255);
    assert_eq!(image.domain(), "foo:443");
    assert_eq!(ImageRef::parse(&image.to_string()), Ok(image));
}
