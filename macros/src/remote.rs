//! `#[remote]`: exposes a function over RPC and generates its typed client.

use crate::names::{check_lit, error_at, NameKind};
use crate::signature::{self, Arg, Returns};
use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitStr};

/// Expands `#[remote]` / `#[remote(name = "...")]` on a function.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut name: Option<LitStr> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            let lit: LitStr = meta.value()?.parse()?;
            check_lit(&lit, NameKind::Name)?;
            name = Some(lit);
            Ok(())
        } else {
            Err(meta.error("unknown #[remote] argument; expected `name = \"service.method\"`"))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    let function: ItemFn = syn::parse2(item)?;
    let sig = &function.sig;

    if let Some(FnArg::Receiver(receiver)) = sig.inputs.first() {
        return Err(error_at(
            receiver,
            "#[remote] cannot expose a method on its own: put #[busbar::service] on the `impl` block \
             instead, which exposes every `pub fn(&self, ..)` of it as `<prefix>.<method>`",
        ));
    }
    signature::check_plain(sig, "remote")?;
    let ctx = Ident::new("context", Span::mixed_site());
    let (args, call_values, wants_bus) = split_bus(sig, &ctx)?;
    signature::check_remote_args(&args)?;
    let returns = signature::returns(sig, "remote")?;

    let fn_ident = &sig.ident;
    let fn_name = fn_ident.unraw().to_string();
    let vis = &function.vis;
    let is_async = sig.asyncness.is_some();
    let ok_type = returns.ok_type();
    let (args_pat, args_ty, args_value) = args_tuple(&args);
    let args_value_tuple = tuple_of(&args_value);
    let p = quote!(::busbar::__private);

    let name_const = match &name {
        Some(lit) => quote!(#lit),
        None => quote! {{
            const PATH: &'static str = #p::module_path!();
            const BYTES: ([u8; #p::remote_name_capacity(PATH, #fn_name)], usize) =
                #p::remote_name(PATH, #fn_name);
            #p::name_str(&BYTES.0, BYTES.1)
        }},
    };
    let shown_name = match &name {
        Some(lit) => format!("`{}`", lit.value()),
        None => format!("derived from its module path: `<modules after the crate name>.{fn_name}`"),
    };

    let call = quote!(#fn_ident(#(#call_values),*));
    let body = handler_body(&returns, is_async, call);
    let bus = bus_ident(&args);
    let bus_for_handler = Ident::new("bus_for_handler", Span::mixed_site());
    let serve = if wants_bus {
        quote! {
            let #bus_for_handler = #p::Clone::clone(#bus);
            #p::expose(#bus, Self::NAME, move |#args_pat: #args_ty| {
                let #ctx = #p::Clone::clone(&#bus_for_handler);
                #body
            })
            .await
        }
    } else {
        quote!(#p::expose(#bus, Self::NAME, |#args_pat: #args_ty| #body).await)
    };
    let call_params = args.iter().map(|Arg { ident, ty }| quote!(#ident: #ty));
    let asserts = remote_asserts(&args, sig);

    let doc = format!(
        "RPC companion of the `#[remote]` function [`{fn_name}`](fn@{fn_name}): its method name \
         ({shown_name}), typed client ([`call`](Self::call), [`stub`](Self::stub)) and \
         registration ([`serve`](Self::serve), [`ENDPOINT`](Self::ENDPOINT))."
    );

    Ok(quote! {
        #function

        #[doc = #doc]
        #[allow(non_camel_case_types, dead_code)]
        #vis struct #fn_ident {
            _private: (),
        }

        #[allow(dead_code, clippy::too_many_arguments)]
        impl #fn_ident {
            /// The RPC method name this function is served as.
            pub const NAME: &'static str = #name_const;

            /// The endpoint, for `Bus::start_endpoints` (explicit registration).
            pub const ENDPOINT: #p::Endpoint = #p::Endpoint::__new(
                #p::EndpointKind::Remote,
                Self::NAME,
                #p::module_path!(),
                #fn_name,
                Self::__start,
            );

            /// Calls the function on one provider through `bus`.
            pub async fn call(#bus: &#p::Bus, #(#call_params),*) -> #p::Result<#ok_type> {
                #p::call::<#args_ty, #ok_type>(#bus, Self::NAME, #args_value_tuple).await
            }

            /// A typed stub, for a timeout or `call_all`; arguments go as a tuple.
            pub fn stub(#bus: &#p::Bus) -> #p::Stub<#args_ty, #ok_type> {
                #p::stub(#bus, Self::NAME)
            }

            /// Serves the function on `bus` until the returned provider is dropped.
            pub async fn serve(#bus: &#p::Bus) -> #p::Result<#p::Provider> {
                #serve
            }

            fn __start(#bus: &#p::Bus) -> #p::BoxFuture<'_, #p::Result<#p::Running>> {
                #p::Box::pin(async move {
                    #p::Ok(#p::running(Self::serve(#bus).await?))
                })
            }
        }

        const _: () = {
            #asserts
            #p::inventory::submit! { #fn_ident::ENDPOINT }
        };
    })
}

/// The typed arguments that travel, the values to call the function with (in its
/// parameter order, `&Bus` given as `&#ctx`), and whether it takes `&Bus`.
pub(crate) fn split_bus(
    sig: &syn::Signature,
    ctx: &Ident,
) -> syn::Result<(Vec<Arg>, Vec<TokenStream>, bool)> {
    let mut args = Vec::new();
    let mut call_values = Vec::new();
    let mut wants_bus = false;
    for arg in signature::typed_args(sig) {
        if is_bus_ref(&arg.ty) {
            if wants_bus {
                return Err(error_at(
                    &arg.ty,
                    "a #[remote] function takes `&Bus` at most once: remove this parameter",
                ));
            }
            wants_bus = true;
            call_values.push(quote!(&#ctx));
        } else {
            let ident = &arg.ident;
            call_values.push(quote!(#ident));
            args.push(arg);
        }
    }
    Ok((args, call_values, wants_bus))
}

/// Whether `ty` is `&Bus` (any path ending in `Bus`).
pub(crate) fn is_bus_ref(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Reference(reference) if reference.mutability.is_none() => match &*reference.elem
        {
            syn::Type::Path(path) => {
                path.qself.is_none() && path.path.segments.last().is_some_and(|s| s.ident == "Bus")
            }
            _ => false,
        },
        _ => false,
    }
}

/// `(a, b,)` as a pattern, its type and the values, for the JSON array of arguments.
pub(crate) fn args_tuple(args: &[Arg]) -> (TokenStream, TokenStream, Vec<Ident>) {
    let idents: Vec<Ident> = args.iter().map(|a| a.ident.clone()).collect();
    let types = args.iter().map(|a| &a.ty);
    (tuple_of(&idents), quote!((#(#types,)*)), idents)
}

/// `(a, b,)`, or `()` for no values.
pub(crate) fn tuple_of(values: &[Ident]) -> TokenStream {
    quote!((#(#values,)*))
}

/// The closure body serving one call: `async move { .. }` or a ready future.
pub(crate) fn handler_body(returns: &Returns, is_async: bool, call: TokenStream) -> TokenStream {
    let p = quote!(::busbar::__private);
    let call = if is_async { quote!(#call.await) } else { call };
    let value = match returns {
        Returns::Result { .. } => call,
        _ => quote!(#p::Ok::<_, #p::Fault>(#call)),
    };
    if is_async {
        quote!(async move { #value })
    } else {
        quote!(#p::ready(#value))
    }
}

/// The name of the `&Bus` parameter of generated functions: `bus`, unless an
/// argument already has that name.
pub(crate) fn bus_ident(args: &[Arg]) -> Ident {
    // Mixed-site, so a function named `bus` stays reachable; the arguments are
    // mixed-site too, hence the check.
    if args.iter().any(|a| a.ident == "bus") {
        format_ident!("__bus", span = Span::mixed_site())
    } else {
        format_ident!("bus", span = Span::mixed_site())
    }
}

/// Compile-time checks pointing at each argument and at the return type.
pub(crate) fn remote_asserts(args: &[Arg], sig: &syn::Signature) -> TokenStream {
    let p = quote!(::busbar::__private);
    let mut out = TokenStream::new();
    for arg in args {
        let ty = &arg.ty;
        out.extend(quote_spanned!(ty.span()=> #p::assert_remote_arg::<#ty>();));
    }
    if let Ok(returns) = signature::returns(sig, "remote") {
        let ok = returns.ok_type();
        let span = signature::return_span(sig);
        out.extend(quote_spanned!(span=> #p::assert_remote_return::<#ok>();));
        if let Returns::Result { err: Some(err), .. } = &returns {
            out.extend(quote_spanned!(err.span()=> #p::assert_remote_error::<#err>();));
        }
    }
    out
}
