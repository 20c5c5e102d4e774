//! `#[subscriber]`: runs a function for each event of a type, topic or pattern.

use crate::names::{check_lit, error, error_at, NameKind};
use crate::signature::{self, Arg};
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitStr, Type};

/// Where the subscriber listens.
enum Source {
    /// The event type's own topic (`E::TOPIC`).
    Event,
    /// An explicit topic.
    Topic(LitStr),
    /// A wildcard pattern.
    Pattern(LitStr),
}

/// A parameter after the event: context given by the bus.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Extra {
    /// `&Bus`: the bus the event came from.
    BusRef,
    /// `Bus`: a clone of it.
    BusOwned,
    /// `&Message`: the received message, for its metadata.
    MessageRef,
}

/// Expands `#[subscriber]`, `#[subscriber(topic = "...")]` or `#[subscriber(pattern = "...")]`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut source = Source::Event;
    let parser = syn::meta::parser(|meta| {
        let key = if meta.path.is_ident("topic") {
            "topic"
        } else if meta.path.is_ident("pattern") {
            "pattern"
        } else {
            return Err(meta.error(
                "unknown #[subscriber] argument; expected `topic = \"orders.created\"` or `pattern = \"orders.*\"`",
            ));
        };
        if !matches!(source, Source::Event) {
            return Err(meta.error("give either `topic` or `pattern`, once"));
        }
        let lit: LitStr = meta.value()?.parse()?;
        source = if key == "topic" {
            check_lit(&lit, NameKind::Name)?;
            Source::Topic(lit)
        } else {
            check_lit(&lit, NameKind::Pattern)?;
            Source::Pattern(lit)
        };
        Ok(())
    });
    syn::parse::Parser::parse2(parser, attr)?;
    let function: ItemFn = syn::parse2(item)?;
    let sig = &function.sig;

    if let Some(FnArg::Receiver(receiver)) = sig.inputs.first() {
        return Err(error_at(
            receiver,
            "#[subscriber] goes on a free function, not a method: \
             `#[subscriber] fn on_order(order: OrderCreated)`",
        ));
    }
    signature::check_plain(sig, "subscriber")?;
    let args = signature::typed_args(sig);
    let Some((event, rest)) = args.split_first() else {
        return Err(error(
            sig.paren_token.span.join(),
            "a #[subscriber] takes the event as its parameter: `fn on_order(order: OrderCreated)`",
        ));
    };
    let mut extras = Vec::new();
    for arg in rest {
        let extra = extra_of(arg)?;
        let same_kind = |e: &Extra| (*e == Extra::MessageRef) == (extra == Extra::MessageRef);
        if extras.iter().any(same_kind) {
            let what = if extra == Extra::MessageRef {
                "`&Message`"
            } else {
                "the bus (`&Bus` or `Bus`)"
            };
            return Err(error_at(
                &arg.ty,
                format!("a #[subscriber] takes {what} at most once: remove this parameter"),
            ));
        }
        extras.push(extra);
    }
    let wants_bus = extras.iter().any(|e| *e != Extra::MessageRef);
    let wants_message = extras.contains(&Extra::MessageRef);
    if let Type::Reference(reference) = &event.ty {
        return Err(error_at(
            reference,
            "a #[subscriber] takes its event by value: remove the `&`",
        ));
    }

    let p = quote!(::busbar::__private);
    // Hygienic locals: a user function named `bus` or `handler` stays reachable.
    let bus = proc_macro2::Ident::new("bus", proc_macro2::Span::mixed_site());
    let handler = proc_macro2::Ident::new("handler", proc_macro2::Span::mixed_site());
    let bus_for_handler =
        proc_macro2::Ident::new("bus_for_handler", proc_macro2::Span::mixed_site());
    let fn_ident = &sig.ident;
    let fn_name = fn_ident.unraw().to_string();
    let vis = &function.vis;
    let event_ty = &event.ty;
    let is_async = sig.asyncness.is_some();

    let (pattern, subscribe, check_event, shown) = match &source {
        Source::Event => (
            quote!(<#event_ty as #p::SubscriberEvent>::SUBSCRIBED_TOPIC),
            quote!(#p::on_event::<#event_ty, _, _>(#bus, #handler)),
            quote_spanned!(event_ty.span()=> #p::assert_event::<#event_ty>();),
            "the event type's `TOPIC`".to_string(),
        ),
        Source::Topic(lit) | Source::Pattern(lit) => (
            quote!(#lit),
            quote!(#p::on_pattern::<#event_ty, _, _>(#bus, Self::PATTERN, #handler)),
            quote_spanned!(event_ty.span()=> #p::assert_payload::<#event_ty>();),
            format!("`{}`", lit.value()),
        ),
    };

    let event_ident = proc_macro2::Ident::new("event", proc_macro2::Span::mixed_site());
    let message_ident = proc_macro2::Ident::new("message", proc_macro2::Span::mixed_site());
    let ctx = proc_macro2::Ident::new("context", proc_macro2::Span::mixed_site());
    let extra_args = extras.iter().map(|extra| match extra {
        Extra::BusRef => quote!(&#ctx),
        Extra::BusOwned => quote!(#p::Clone::clone(&#ctx)),
        Extra::MessageRef => quote!(&#message_ident),
    });
    let call = quote!(#fn_ident(#event_ident #(, #extra_args)*));
    let params = if wants_message {
        quote!(#event_ident: #event_ty, #message_ident: #p::Message)
    } else {
        quote!(#event_ident: #event_ty)
    };
    let handler_setup = match (extras.is_empty(), is_async) {
        (true, true) => quote!(let #handler = #fn_ident;),
        (_, true) => {
            let (outer, inner) = if wants_bus {
                (
                    quote!(let #bus_for_handler = #p::Clone::clone(#bus);),
                    quote!(let #ctx = #p::Clone::clone(&#bus_for_handler);),
                )
            } else {
                (quote!(), quote!())
            };
            quote! {
                #outer
                let #handler = move |#params| {
                    #inner
                    async move { #call.await }
                };
            }
        }
        (_, false) => {
            let outer = if wants_bus {
                quote!(let #ctx = #p::Clone::clone(#bus);)
            } else {
                quote!()
            };
            quote! {
                #outer
                let #handler = move |#params| #p::ready(#call);
            }
        }
    };
    let subscribe = if wants_message {
        quote!(#p::on_with_message::<#event_ty, _, _>(#bus, Self::PATTERN, #handler))
    } else {
        subscribe
    };
    let return_ty = match &sig.output {
        syn::ReturnType::Default => quote!(()),
        syn::ReturnType::Type(_, ty) => quote!(#ty),
    };
    let return_check =
        quote_spanned!(signature::return_span(sig)=> #p::assert_subscriber_return::<#return_ty>(););

    let doc = format!(
        "Subscription companion of the `#[subscriber]` function [`{fn_name}`](fn@{fn_name}), \
         listening on {shown}: [`subscribe`](Self::subscribe) and [`ENDPOINT`](Self::ENDPOINT)."
    );

    Ok(quote! {
        #function

        #[doc = #doc]
        #[allow(non_camel_case_types, dead_code)]
        #vis struct #fn_ident {
            _private: (),
        }

        #[allow(dead_code)]
        impl #fn_ident {
            /// The topic or pattern this subscriber listens on.
            pub const PATTERN: &'static str = #pattern;

            /// The endpoint, for `Bus::start_endpoints` (explicit registration).
            pub const ENDPOINT: #p::Endpoint = #p::Endpoint::__new(
                #p::EndpointKind::Subscriber,
                Self::PATTERN,
                #p::module_path!(),
                #fn_name,
                Self::__start,
            );

            /// Runs the function for each matching event on `bus`, one at a time,
            /// until the returned listener is dropped.
            pub async fn subscribe(#bus: &#p::Bus) -> #p::Result<#p::Listener> {
                #handler_setup
                #subscribe.await
            }

            fn __start(#bus: &#p::Bus) -> #p::BoxFuture<'_, #p::Result<#p::Running>> {
                #p::Box::pin(async move {
                    #p::Ok(#p::running(Self::subscribe(#bus).await?))
                })
            }
        }

        const _: () = {
            #check_event
            #return_check
            #p::inventory::submit! { #fn_ident::ENDPOINT }
        };
    })
}

/// A parameter after the event: `&Bus`, `Bus` or `&Message`.
fn extra_of(arg: &Arg) -> syn::Result<Extra> {
    let last_is = |ty: &Type, name: &str| match ty {
        Type::Path(path) => {
            path.qself.is_none() && path.path.segments.last().is_some_and(|s| s.ident == name)
        }
        _ => false,
    };
    match &arg.ty {
        Type::Reference(r) if r.mutability.is_none() && last_is(&r.elem, "Bus") => {
            Ok(Extra::BusRef)
        }
        Type::Reference(r) if r.mutability.is_none() && last_is(&r.elem, "Message") => {
            Ok(Extra::MessageRef)
        }
        ty if last_is(ty, "Bus") => Ok(Extra::BusOwned),
        ty => Err(error_at(
            ty,
            "a #[subscriber] takes exactly one event parameter, optionally followed by `&Bus` \
             (the bus the event came from) and `&Message` (the received message and its metadata); \
             subscribe another function for another event",
        )),
    }
}
