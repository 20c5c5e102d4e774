//! `#[service]`: serves the methods of a value over RPC, with a typed client.

use crate::names::{check_lit, error, error_at, snake_case, NameKind};
use crate::remote::{args_tuple, handler_body, remote_asserts, split_bus, tuple_of};
use crate::signature::{self, Arg, Returns};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::{FnArg, ImplItem, ImplItemFn, ItemImpl, LitStr, Type, Visibility};

/// One exposed method.
struct Method {
    ident: syn::Ident,
    name: String,
    /// The arguments that travel (not `&Bus`).
    args: Vec<Arg>,
    /// The values the method is called with, `&Bus` included.
    call_values: Vec<TokenStream>,
    /// Whether the method takes `&Bus`.
    wants_bus: bool,
    returns: Returns,
    is_async: bool,
    sig: syn::Signature,
    docs: Vec<syn::Attribute>,
}

/// Expands `#[service]` / `#[service(prefix = "...")]` on an inherent `impl` block.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut prefix: Option<LitStr> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("prefix") {
            let lit: LitStr = meta.value()?.parse()?;
            check_lit(&lit, NameKind::Name)?;
            prefix = Some(lit);
            Ok(())
        } else {
            Err(meta.error("unknown #[service] argument; expected `prefix = \"inventory\"`"))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    let mut block: ItemImpl = syn::parse2(item).map_err(|err| {
        syn::Error::new(
            err.span(),
            "#[service] goes on an `impl` block: `#[busbar::service] impl Inventory { .. }`",
        )
    })?;
    if let Some((_, path, _)) = &block.trait_ {
        return Err(error_at(
            path,
            "#[service] goes on an inherent `impl` block, not a trait impl",
        ));
    }
    if !block.generics.params.is_empty() || block.generics.where_clause.is_some() {
        return Err(error_at(
            &block.generics,
            "#[service] types cannot be generic: the served methods need concrete types",
        ));
    }
    let self_ty = (*block.self_ty).clone();
    let type_ident = match &self_ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().map(|s| s.ident.clone())
        }
        _ => None,
    }
    .ok_or_else(|| {
        error_at(
            &self_ty,
            "#[service] needs a named type: `impl Inventory { .. }`",
        )
    })?;
    let prefix = match &prefix {
        Some(lit) => lit.value(),
        None => snake_case(&type_ident.unraw().to_string()),
    };

    let mut methods = Vec::new();
    for item in &mut block.items {
        if let ImplItem::Fn(function) = item {
            if let Some(method) = exposed(function)? {
                methods.push(method);
            }
        }
    }
    if methods.is_empty() {
        return Err(error(
            block.impl_token.span,
            "this #[service] exposes no method: it serves every `pub fn` taking `&self` \
             (or any `&self` method marked #[remote])",
        ));
    }

    let p = quote!(::busbar::__private);
    let names: Vec<&String> = methods.iter().map(|m| &m.name).collect();
    let mut serve = TokenStream::new();
    let mut client_methods = TokenStream::new();
    let mut asserts = TokenStream::new();
    for method in &methods {
        let Method {
            ident,
            name,
            args,
            call_values,
            wants_bus,
            returns,
            is_async,
            sig,
            docs,
        } = method;
        let (args_pat, args_ty, values) = args_tuple(args);
        let values_tuple = tuple_of(&values);
        let body = handler_body(returns, *is_async, quote!(this.#ident(#(#call_values),*)));
        let clone_this = if *is_async {
            quote!(let this = #p::Clone::clone(&this);)
        } else {
            quote!(let this = &this;)
        };
        let ctx = context_ident();
        let bus_for_handler = syn::Ident::new("bus_for_handler", proc_macro2::Span::mixed_site());
        let (outer, inner) = if *wants_bus {
            (
                quote!(let #bus_for_handler = #p::Clone::clone(bus);),
                quote!(let #ctx = #p::Clone::clone(&#bus_for_handler);),
            )
        } else {
            (quote!(), quote!())
        };
        serve.extend(quote! {
            {
                #outer
                let this = #p::Clone::clone(&self);
                let name = #p::method_name(prefix, #name);
                let provider = #p::expose(bus, &name, move |#args_pat: #args_ty| {
                    #clone_this
                    #inner
                    #body
                })
                .await?;
                registered.push(name, provider);
            }
        });
        let ok_type = returns.ok_type();
        let params = args.iter().map(|Arg { ident, ty }| quote!(#ident: #ty));
        let doc = format!("Calls `<prefix>.{name}` on one provider.");
        client_methods.extend(quote! {
            #(#docs)*
            #[doc = ""]
            #[doc = #doc]
            pub async fn #ident(&self, #(#params),*) -> #p::Result<#ok_type> {
                #p::call_method::<#args_ty, #ok_type>(&self.bus, &self.prefix, #name, self.timeout, #values_tuple)
                    .await
            }
        });
        asserts.extend(remote_asserts(args, sig));
    }

    let client = format_ident!("{}Client", type_ident);
    let client_doc = format!(
        "Typed client of the `#[service]` [`{type_ident}`]: one async method per served method, \
         calling `<prefix>.<method>` (prefix `{prefix}` unless given to [`with_prefix`](Self::with_prefix))."
    );

    Ok(quote! {
        #block

        const _: () = {
            #asserts

            impl #p::Service for #self_ty {
                const PREFIX: &'static str = #prefix;
                const METHODS: &'static [&'static str] = &[#(#names),*];

                fn serve_on<'a>(
                    self: #p::Arc<Self>,
                    bus: &'a #p::Bus,
                    prefix: &'a str,
                ) -> #p::BoxFuture<'a, #p::Result<#p::Registered>> {
                    #p::Box::pin(async move {
                        let mut registered = #p::registered();
                        #serve
                        #p::Ok(registered)
                    })
                }
            }
        };

        #[doc = #client_doc]
        #[allow(dead_code)]
        pub struct #client {
            bus: #p::Bus,
            prefix: #p::String,
            timeout: #p::Duration,
        }

        impl #p::Clone for #client {
            fn clone(&self) -> Self {
                #client {
                    bus: #p::Clone::clone(&self.bus),
                    prefix: #p::Clone::clone(&self.prefix),
                    timeout: self.timeout,
                }
            }
        }

        #[allow(dead_code, clippy::too_many_arguments)]
        impl #client {
            /// A client of the service served under its default prefix.
            pub fn new(bus: &#p::Bus) -> Self {
                #client {
                    bus: #p::Clone::clone(bus),
                    prefix: #p::to_string(#prefix),
                    timeout: #p::DEFAULT_TIMEOUT,
                }
            }

            /// A client of the service served under `prefix` (see `Bus::serve_as`).
            pub fn with_prefix(bus: &#p::Bus, prefix: &str) -> #p::Result<Self> {
                #p::check_prefix(prefix)?;
                #p::Ok(#client {
                    bus: #p::Clone::clone(bus),
                    prefix: #p::to_string(prefix),
                    timeout: #p::DEFAULT_TIMEOUT,
                })
            }

            /// Sets how long each call waits for its answer.
            pub fn timeout(mut self, timeout: #p::Duration) -> Self {
                self.timeout = timeout;
                self
            }

            #client_methods
        }
    })
}

/// The hygienic name of the `&Bus` given to methods that take it.
fn context_ident() -> syn::Ident {
    syn::Ident::new("context", proc_macro2::Span::mixed_site())
}

/// The method, if the service exposes it; strips a `#[remote]` marker.
fn exposed(function: &mut ImplItemFn) -> syn::Result<Option<Method>> {
    let mut marked = false;
    let mut marker_error = None;
    function.attrs.retain(|attr| {
        let is_remote = attr.path().segments.last().is_some_and(|s| s.ident == "remote");
        if is_remote {
            marked = true;
            if !matches!(attr.meta, syn::Meta::Path(_)) {
                marker_error = Some(error_at(
                    attr,
                    "inside #[service], `#[remote]` takes no arguments: methods are named `<prefix>.<method>`",
                ));
            }
        }
        !is_remote
    });
    if let Some(err) = marker_error {
        return Err(err);
    }
    let sig = &function.sig;
    let receiver = match sig.inputs.first() {
        Some(FnArg::Receiver(receiver)) => receiver,
        _ if marked => {
            return Err(error_at(
                &sig.ident,
                "a #[service] method takes `&self`; use a free #[remote] fn for functions without state",
            ))
        }
        _ => return Ok(None),
    };
    let public = !matches!(function.vis, Visibility::Inherited);
    if !public && !marked {
        return Ok(None);
    }
    if receiver.reference.is_none()
        || receiver.mutability.is_some()
        || receiver.colon_token.is_some()
    {
        return Err(error_at(
            receiver,
            "a #[service] method takes `&self`: the value is shared by concurrent calls, so keep \
             mutable state behind a Mutex or atomics (or make this method private to keep it local)",
        ));
    }
    if ["new", "with_prefix", "timeout"].contains(&sig.ident.unraw().to_string().as_str()) {
        return Err(error_at(
            &sig.ident,
            "the generated client has its own `new`, `with_prefix` and `timeout`: rename this \
             method, or make it private to keep it local",
        ));
    }
    signature::check_plain(sig, "service")?;
    let (args, call_values, wants_bus) = split_bus(sig, &context_ident())?;
    signature::check_remote_args(&args)?;
    let returns = signature::returns(sig, "service")?;
    let docs = function
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .cloned()
        .collect();
    Ok(Some(Method {
        ident: sig.ident.clone(),
        name: sig.ident.unraw().to_string(),
        args,
        call_values,
        wants_bus,
        returns,
        is_async: sig.asyncness.is_some(),
        sig: sig.clone(),
        docs,
    }))
}
