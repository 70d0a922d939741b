//! Checkpoints (`log::verify_checkpoint`, what devices and the auditor trust). The first byte
//! chooses: even, the rest is a signed note verified under the fuzzing log's key, and an accepted
//! checkpoint signed again verifies to the same origin, size and root; odd, the rest is a
//! checkpoint body, which (when it parses) is signed and must verify to what it says.
#![no_main]

use hattama_core::log::{sign_checkpoint, verify_checkpoint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let key = hattama_fuzz::log_key();
    let signer = hattama_fuzz::log_signing_key();
    if mode % 2 == 0 {
        let Ok(cp) = verify_checkpoint(rest, &key) else { return };
        assert_eq!(cp.origin, hattama_fuzz::LOG_ORIGIN);
        assert_eq!(cp.note, rest);
        let note = sign_checkpoint(&cp.origin, cp.size, &cp.root, &signer).expect("signs");
        let again = verify_checkpoint(&note, &key).expect("a signed checkpoint verifies");
        assert_eq!((again.origin, again.size, again.root), (cp.origin, cp.size, cp.root));
    } else {
        let Ok(body) = tlog_tiles::Checkpoint::from_bytes(rest) else { return };
        let Ok(note) = sign_checkpoint(body.origin(), body.size(), body.hash(), &signer) else {
            return;
        };
        match verify_checkpoint(&note, &key) {
            Ok(cp) => {
                assert_eq!(
                    (cp.origin.as_str(), cp.size, &cp.root),
                    (body.origin(), body.size(), body.hash())
                );
            }
            Err(e) => assert_ne!(body.origin(), hattama_fuzz::LOG_ORIGIN, "{e}"),
        }
    }
});
