//! The list query parser: any query string. Must never panic, and whatever
//! it accepts is within the contract's bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate::tasks::model::ListQuery;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(q) = ListQuery::parse(Some(text)) {
        assert!((1..=100).contains(&q.limit) && q.offset >= 0, "{q:?} from {text:?}");
        let _ = q.shape();
    }
});
