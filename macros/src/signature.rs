//! Reading the signature of an annotated function: its arguments and return type.

use crate::names::error_at;
use proc_macro2::Span;
use quote::format_ident;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, Ident, Pat, PathArguments, ReturnType, Signature, Type};

/// One typed argument.
pub(crate) struct Arg {
    /// A plain name for it in generated code: its own name when it is a simple
    /// binding, `argN` otherwise; hygienic (mixed-site), so it never shadows the
    /// user's items.
    pub(crate) ident: Ident,
    /// Its type.
    pub(crate) ty: Type,
}

/// What a function returns.
pub(crate) enum Returns {
    /// Nothing (`()`).
    Unit,
    /// A plain value, wrapped as `Ok` in generated code.
    Plain(Type),
    /// A `Result` (a type whose last path segment is `Result`); `ok` is its value
    /// type, `err` its error type when written out (not with `busbar::Result<T>`).
    Result { ok: Type, err: Option<Box<Type>> },
}

impl Returns {
    /// The type the caller receives on success.
    pub(crate) fn ok_type(&self) -> Type {
        match self {
            Returns::Unit => syn::parse_quote!(()),
            Returns::Plain(ty) | Returns::Result { ok: ty, .. } => ty.clone(),
        }
    }
}

/// Rejects what no busbar macro supports: generics, `unsafe`, `extern`, `const`, variadics.
pub(crate) fn check_plain(sig: &Signature, macro_name: &str) -> syn::Result<()> {
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(error_at(
            &sig.generics,
            format!("#[{macro_name}] functions cannot be generic: the types must be known to decode messages; use concrete types"),
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        return Err(error_at(
            unsafety,
            format!("#[{macro_name}] functions cannot be `unsafe`"),
        ));
    }
    if let Some(abi) = &sig.abi {
        return Err(error_at(
            abi,
            format!("#[{macro_name}] functions cannot be `extern`"),
        ));
    }
    if let Some(constness) = &sig.constness {
        return Err(error_at(
            constness,
            format!("#[{macro_name}] functions cannot be `const`"),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(error_at(
            variadic,
            format!("#[{macro_name}] functions cannot be variadic"),
        ));
    }
    for arg in &sig.inputs {
        if let FnArg::Typed(typed) = arg {
            if let Type::ImplTrait(_) = &*typed.ty {
                return Err(error_at(
                    &typed.ty,
                    format!("#[{macro_name}] arguments need a concrete type, not `impl Trait`"),
                ));
            }
        }
    }
    Ok(())
}

/// The typed arguments (the receiver, if any, is skipped), named for generated code.
pub(crate) fn typed_args(sig: &Signature) -> Vec<Arg> {
    sig.inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(typed) => Some(typed),
            FnArg::Receiver(_) => None,
        })
        .enumerate()
        .map(|(i, typed)| {
            let ident = match &*typed.pat {
                Pat::Ident(pat) if pat.subpat.is_none() && pat.by_ref.is_none() => {
                    let name = pat.ident.unraw().to_string();
                    if name.starts_with('_') || name == "self" {
                        format_ident!("arg{}", i, span = Span::mixed_site())
                    } else {
                        Ident::new(&name, Span::mixed_site())
                    }
                }
                _ => format_ident!("arg{}", i, span = Span::mixed_site()),
            };
            Arg {
                ident,
                ty: (*typed.ty).clone(),
            }
        })
        .collect()
}

/// The most arguments a `#[remote]` function takes (serde's largest tuple).
const MAX_REMOTE_ARGS: usize = 16;

/// Checks that a `#[remote]` argument is owned, so it can be decoded from a request.
pub(crate) fn check_remote_args(args: &[Arg]) -> syn::Result<()> {
    if let Some(extra) = args.get(MAX_REMOTE_ARGS) {
        return Err(error_at(
            &extra.ty,
            format!("#[remote] functions take at most {MAX_REMOTE_ARGS} arguments; group some in a struct"),
        ));
    }
    for arg in args {
        if let Type::Reference(reference) = &arg.ty {
            let hint = match &*reference.elem {
                Type::Path(path) if path.path.is_ident("str") => {
                    "use `String` instead of `&str`".to_string()
                }
                Type::Slice(slice) => {
                    let elem = &slice.elem;
                    format!("use `Vec<{}>` instead of a slice", quote::quote!(#elem))
                }
                _ => "take the value by value".to_string(),
            };
            return Err(error_at(
                &arg.ty,
                format!(
                    "#[remote] arguments are decoded from each request and must be owned: {hint}"
                ),
            ));
        }
    }
    Ok(())
}

/// Reads the return type; a `Result` is recognised by its last path segment.
pub(crate) fn returns(sig: &Signature, macro_name: &str) -> syn::Result<Returns> {
    let ty = match &sig.output {
        ReturnType::Default => return Ok(Returns::Unit),
        ReturnType::Type(_, ty) => &**ty,
    };
    match ty {
        Type::ImplTrait(_) => {
            return Err(error_at(
                ty,
                format!("#[{macro_name}] functions must return a concrete serde type, not `impl Trait`"),
            ))
        }
        Type::Reference(_) => {
            return Err(error_at(
                ty,
                format!("#[{macro_name}] functions must return an owned value, which is encoded into the reply"),
            ))
        }
        Type::Tuple(tuple) if tuple.elems.is_empty() => return Ok(Returns::Unit),
        _ => {}
    }
    if let Type::Path(path) = ty {
        if let Some(last) = path.path.segments.last() {
            if last.ident == "Result" {
                if let PathArguments::AngleBracketed(generics) = &last.arguments {
                    let mut types = generics.args.iter().filter_map(|arg| match arg {
                        GenericArgument::Type(ty) => Some(ty.clone()),
                        _ => None,
                    });
                    if let Some(ok) = types.next() {
                        return Ok(Returns::Result {
                            ok,
                            err: types.next().map(Box::new),
                        });
                    }
                }
            }
        }
    }
    Ok(Returns::Plain(ty.clone()))
}

/// The span of the return type, or of the signature when there is none.
pub(crate) fn return_span(sig: &Signature) -> Span {
    match &sig.output {
        ReturnType::Default => sig.ident.span(),
        ReturnType::Type(_, ty) => ty.span(),
    }
}
