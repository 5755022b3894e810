//! Request body decoding and validation: any bytes, as POST and PATCH
//! /tasks would receive them. Must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate::tasks::model::{NewTaskBody, TaskPatchBody};

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = serde_json::from_slice::<NewTaskBody>(data) {
        let _ = b.validate();
    }
    if let Ok(b) = serde_json::from_slice::<TaskPatchBody>(data) {
        let _ = b.validate();
    }
});
