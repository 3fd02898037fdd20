//! Replays every input kept under `fuzz/regressions/<target>/` (crash inputs the fuzzer once found) and the seed
//! corpus of each target through the same body the fuzzer runs (`bastionctl_core::fuzzing`): a fixed crash stays fixed.

use std::path::Path;

use bastionctl_core::fuzzing::TARGETS;

#[test]
fn kept_fuzz_inputs_replay_without_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    assert!(root.join("regressions/README.md").exists(), "fuzz/regressions/ is missing");
    let mut replayed = 0;
    for (target, body) in TARGETS {
        for dir in ["regressions", "seeds"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| body(&data));
                assert!(outcome.is_ok(), "{target}: {} panics", path.display());
                replayed += 1;
            }
        }
    }
    assert!(replayed >= TARGETS.len(), "every target has at least one seed; replayed {replayed}");
}
