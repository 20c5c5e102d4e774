//! The generated code names only `::busbar::__private`: it compiles in a module
//! without the prelude, next to items that shadow the usual names.

mod no_prelude {
    #![no_implicit_prelude]
    #![allow(dead_code, non_camel_case_types)]

    // Shadows of what generated code might otherwise name.
    struct Result;
    struct Ok;
    struct Err;
    struct Box;
    struct Arc;
    struct String;
    struct Vec;
    struct Option;
    struct Send;
    struct Clone;
    struct Future;
    mod serde {}
    mod inventory {}
    mod core {}
    mod std {}

    #[derive(::serde::Serialize, ::serde::Deserialize, ::busbar::Event)]
    #[event(topic = "hygiene.pinged")]
    pub(crate) struct Pinged {
        pub(crate) n: u32,
    }

    #[::busbar::subscriber]
    pub(crate) fn on_ping(_ping: Pinged) {}

    #[::busbar::subscriber]
    pub(crate) async fn on_ping_metadata(_ping: Pinged, _message: &::busbar::Message) {}

    #[::busbar::subscriber(pattern = "hygiene.*")]
    pub(crate) async fn on_any(_message: ::busbar::Message, _bus: &::busbar::Bus) {}

    #[::busbar::remote]
    pub(crate) async fn double(n: u32) -> u32 {
        n * 2
    }

    #[::busbar::remote(name = "hygiene.half")]
    pub(crate) fn half(n: u32) -> ::std::result::Result<u32, ::busbar::Fault> {
        ::std::result::Result::Ok(n / 2)
    }

    /// Named like the generated code's own locals.
    #[::busbar::remote(name = "hygiene.bus")]
    pub(crate) fn bus(n: u32) -> u32 {
        n + 1
    }

    #[::busbar::subscriber]
    pub(crate) fn handler(_ping: Pinged, _bus: &::busbar::Bus) {}

    pub(crate) struct Doubler;

    #[::busbar::service(prefix = "hygiene.doubler")]
    impl Doubler {
        pub(crate) fn double(&self, n: u32) -> u32 {
            n * 2
        }
    }
}

#[tokio::test]
async fn generated_code_needs_no_prelude() {
    use no_prelude::*;
    let bus = busbar::Bus::connect("memory://macros-hygiene")
        .await
        .unwrap();
    let _remote = double::serve(&bus).await.unwrap();
    let _half = half::serve(&bus).await.unwrap();
    let _service = bus.serve(Doubler).await.unwrap();
    let _listeners = bus
        .start_endpoints([
            &on_ping::ENDPOINT,
            &on_ping_metadata::ENDPOINT,
            &on_any::ENDPOINT,
        ])
        .await
        .unwrap();
    assert_eq!(double::NAME, "no_prelude.double");
    assert_eq!(double::call(&bus, 21).await.unwrap(), 42);
    assert_eq!(half::call(&bus, 42).await.unwrap(), 21);
    assert_eq!(DoublerClient::new(&bus).double(4).await.unwrap(), 8);
    assert_eq!(on_ping::PATTERN, "hygiene.pinged");
    let _bus_provider = bus::serve(&bus).await.unwrap();
    let _handler = handler::subscribe(&bus).await.unwrap();
    assert_eq!(bus::call(&bus, 1).await.unwrap(), 2);
}
