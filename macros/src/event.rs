//! `#[derive(Event)]`: implements `busbar::Event` with a declared or default topic.

use crate::names::{check_lit, snake_case, NameKind};
use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;
use syn::{DeriveInput, LitStr};

/// Expands `#[derive(Event)]` with an optional `#[event(topic = "...")]`.
pub(crate) fn expand(item: TokenStream) -> syn::Result<TokenStream> {
    let input: DeriveInput = syn::parse2(item)?;
    let mut topic: Option<LitStr> = None;
    for attr in input
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("event"))
    {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("topic") {
                if topic.is_some() {
                    return Err(meta.error("the topic is given twice"));
                }
                let lit: LitStr = meta.value()?.parse()?;
                check_lit(&lit, NameKind::Name)?;
                topic = Some(lit);
                Ok(())
            } else {
                Err(meta.error("unknown #[event] argument; expected `topic = \"orders.created\"`"))
            }
        })?;
    }
    let topic = match topic {
        Some(lit) => lit.value(),
        None => snake_case(&input.ident.unraw().to_string()),
    };
    let ident = &input.ident;
    let mut generics = input.generics.clone();
    if !generics.params.is_empty() {
        // A generic event is an event for the type arguments that make it serde.
        let p = quote!(::busbar::__private);
        generics
            .make_where_clause()
            .predicates
            .push(syn::parse_quote! {
                Self: #p::serde::Serialize + #p::serde::de::DeserializeOwned + #p::Send + 'static
            });
    }
    let (impl_generics, type_generics, where_clause) = generics.split_for_impl();
    Ok(quote! {
        const _: () = {
            impl #impl_generics ::busbar::__private::Event for #ident #type_generics #where_clause {
                const TOPIC: &'static str = #topic;
            }
        };
    })
}
