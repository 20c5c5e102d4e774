//! Unit tests of the security layer's checks (a child module of `layer`).

use super::*;
use crate::ContentType;

fn refused(verdict: Verdict) -> Option<Rejection> {
    match verdict {
        Verdict::Accept(_) => None,
        Verdict::Refuse(why, _) => Some(why),
    }
}

#[test]
fn debug_of_the_layer_names_keys_by_id_only() {
    let keys = KeyRing::new("k1", &[0xAB; 32]).unwrap();
    let text = format!("{:?}", SecureLayer::new(keys).encrypt(true));
    assert!(
        text.contains("k1") && text.contains("encrypt: true"),
        "{text}"
    );
    for needle in ["abab", "ABAB", "171, 171", "[171"] {
        assert!(!text.contains(needle), "{text} shows {needle}");
    }
}

#[test]
fn signed_envelopes_stay_on_their_channel() {
    let keys = KeyRing::new("k1", &[1; 32]).unwrap();
    let shared = Shared {
        config: SecureLayer::new(keys.clone()),
        stats: Arc::default(),
        transport: "test",
        log: LogBudget::default(),
    };
    let name = |n: &str| Name::new(n).unwrap();
    let signed = |kind, subject: &str| {
        let mut e = Envelope::new(kind, name(subject), ContentType::JSON, Bytes::new());
        sign::sign(&mut e, &keys).unwrap();
        e
    };
    let check = |e: &Envelope, route| refused(shared.incoming(e.clone(), route, None));

    let item = signed(Kind::QueueItem, "jobs.a");
    let queue = name("jobs.a");
    assert_eq!(check(&item, Route::Queue(&queue)), None);
    let other_queue = name("jobs.b");
    assert_eq!(
        check(&item, Route::Queue(&other_queue)),
        Some(Rejection::Misrouted)
    );

    let event = signed(Kind::Event, "orders.created");
    let orders = Pattern::new("orders.*").unwrap();
    let jobs = Pattern::new("jobs.>").unwrap();
    assert_eq!(check(&event, Route::Subscription(&orders)), None);
    assert_eq!(
        check(&event, Route::Subscription(&jobs)),
        Some(Rejection::Misrouted)
    );

    let method = name("orders.created");
    assert_eq!(
        check(&event, Route::Request(&method)),
        Some(Rejection::Misrouted),
        "an event is not a request, even on a method of the same name"
    );
    let request = signed(Kind::Request, "orders.created");
    assert_eq!(check(&request, Route::Request(&method)), None);

    let mut reply = request.reply(Kind::Reply, ContentType::JSON, Bytes::new());
    sign::sign(&mut reply, &keys).unwrap();
    assert_eq!(check(&reply, Route::Reply(request.id)), None);
    assert_eq!(
        check(&reply, Route::Reply(crate::MessageId::new())),
        Some(Rejection::Misrouted)
    );
    assert_eq!(
        check(&request, Route::Reply(request.id)),
        Some(Rejection::Misrouted)
    );
}

#[test]
fn log_budget_caps_each_second_and_reports_what_it_skipped() {
    let budget = LogBudget::default();
    let logged = (0..100).filter(|_| budget.take().is_some()).count() as u64;
    // A second boundary may fall inside the loop: at most two windows.
    assert!(
        (LOGS_PER_SECOND..=2 * LOGS_PER_SECOND).contains(&logged),
        "{logged}"
    );
    assert_eq!(
        budget.suppressed.load(std::sync::atomic::Ordering::Relaxed),
        100 - logged
    );
}
