//! The UI's languages: Kazakh, Russian and English, with Project Fluent message files
//! (`server/locales/{kk,ru,en}/*.ftl`, compiled into the binary).
//!
//! The language of a request is the user's explicit choice (the `lang` cookie set by the
//! language switcher, `GET /lang`), else the best match of `Accept-Language`, else Kazakh.
//! Templates translate through [`Lang::t`] and friends; a missing message shows its id (and a unit
//! test makes sure none is missing: every id exists in all three languages, and every id a
//! template uses exists).

use std::borrow::Cow;
use std::sync::LazyLock;

use actix_web::HttpRequest;
use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};

/// The cookie holding the user's explicit language choice.
pub const LANG_COOKIE: &str = "lang";

/// A language of the UI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lang {
    /// Kazakh (the default).
    Kk,
    /// Russian.
    Ru,
    /// English.
    En,
}

impl Lang {
    /// Every language, in the order the switcher shows them.
    pub const ALL: [Lang; 3] = [Lang::Kk, Lang::Ru, Lang::En];

    /// The BCP 47 code (`kk`, `ru`, `en`), as in `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Kk => "kk",
            Lang::Ru => "ru",
            Lang::En => "en",
        }
    }

    /// The language's own name, as the switcher shows it.
    pub fn native_name(self) -> &'static str {
        match self {
            Lang::Kk => "Қазақша",
            Lang::Ru => "Русский",
            Lang::En => "English",
        }
    }

    /// Parses a code (`kk`, `ru`, `en`; a region suffix such as `ru-KZ` is ignored).
    pub fn from_code(code: &str) -> Option<Self> {
        let primary = code.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "kk" => Some(Lang::Kk),
            "ru" => Some(Lang::Ru),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The best language of an `Accept-Language` header, by quality (ties: first listed).
    pub fn from_accept_language(header: &str) -> Option<Self> {
        let mut best: Option<(Lang, u32)> = None;
        for item in header.split(',') {
            let mut parts = item.split(';');
            let Some(lang) = parts.next().and_then(Lang::from_code) else { continue };
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            // Thousandths, so that qualities compare as integers.
            let q = (q.clamp(0.0, 1.0) * 1000.0) as u32;
            if q > 0 && best.is_none_or(|(_, b)| q > b) {
                best = Some((lang, q));
            }
        }
        best.map(|(l, _)| l)
    }

    /// The language of a request: the `lang` cookie, then `Accept-Language`, then Kazakh.
    pub fn of_request(req: &HttpRequest) -> Self {
        req.cookie(LANG_COOKIE)
            .and_then(|c| Lang::from_code(c.value()))
            .or_else(|| {
                req.headers()
                    .get(actix_web::http::header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Lang::from_accept_language)
            })
            .unwrap_or(Lang::Kk)
    }

    fn bundle(self) -> &'static Bundle {
        let i18n = &*I18N;
        match self {
            Lang::Kk => &i18n.kk,
            Lang::Ru => &i18n.ru,
            Lang::En => &i18n.en,
        }
    }

    /// A name of the election data (election, line, relation) in this language.
    pub fn pick(self, names: &hattama_core::election::Names) -> &str {
        match self {
            Lang::Kk => &names.kk,
            Lang::Ru => &names.ru,
            Lang::En => &names.en,
        }
    }

    /// The message `id` in this language (its id if it does not exist).
    pub fn t(self, id: &str) -> String {
        self.format(id, None).into_owned()
    }

    /// The message `id` with one argument, e.g. `t1("queue-count", "count", 12)`.
    pub fn t1(self, id: &str, name: &str, value: impl IntoArg) -> String {
        let mut args = FluentArgs::new();
        args.set(name.to_owned(), value.into_arg().0);
        self.format(id, Some(&args)).into_owned()
    }

    /// The message `id` with several arguments.
    pub fn t_args(self, id: &str, args: &[(&str, Arg)]) -> String {
        let mut fluent = FluentArgs::new();
        for (name, value) in args {
            fluent.set(name.to_string(), value.0.clone());
        }
        self.format(id, Some(&fluent)).into_owned()
    }

    fn format<'a>(self, id: &'a str, args: Option<&FluentArgs<'_>>) -> Cow<'a, str> {
        let bundle = self.bundle();
        let Some(pattern) = bundle.get_message(id).and_then(|m| m.value()) else {
            tracing::warn!(id, lang = self.code(), "missing message");
            return Cow::Borrowed(id);
        };
        let mut errors = Vec::new();
        let text = bundle.format_pattern(pattern, args, &mut errors).into_owned();
        if !errors.is_empty() {
            tracing::warn!(id, lang = self.code(), ?errors, "message formatting failed");
        }
        Cow::Owned(text)
    }
}

/// An argument of a message: a number or a string.
#[derive(Clone, Debug)]
pub struct Arg(FluentValue<'static>);

/// Values that can be a message argument (templates pass references, hence the `&T` impl).
pub trait IntoArg {
    /// The argument.
    fn into_arg(self) -> Arg;
}

macro_rules! number_arg {
    ($($t:ty),*) => {$(
        impl IntoArg for $t {
            fn into_arg(self) -> Arg {
                Arg(FluentValue::from(self))
            }
        }
    )*};
}
number_arg!(u16, u32, u64, usize, i32, i64);

impl IntoArg for String {
    fn into_arg(self) -> Arg {
        Arg(FluentValue::from(self))
    }
}

impl IntoArg for &str {
    fn into_arg(self) -> Arg {
        Arg(FluentValue::from(self.to_owned()))
    }
}

impl<T: IntoArg + Clone> IntoArg for &T {
    fn into_arg(self) -> Arg {
        self.clone().into_arg()
    }
}

type Bundle = FluentBundle<FluentResource>;

/// The message files of every language, in this order. A new file is added here for all three
/// languages (a unit test checks that the list matches the directories).
macro_rules! locale_files {
    ($lang:literal) => {
        [
            ("main.ftl", include_str!(concat!("../../locales/", $lang, "/main.ftl"))),
            ("review.ftl", include_str!(concat!("../../locales/", $lang, "/review.ftl"))),
            ("gallery.ftl", include_str!(concat!("../../locales/", $lang, "/gallery.ftl"))),
            ("console.ftl", include_str!(concat!("../../locales/", $lang, "/console.ftl"))),
            ("report.ftl", include_str!(concat!("../../locales/", $lang, "/report.ftl"))),
        ]
    };
}

/// File names of the message files of every language (the tests check the list).
pub const LOCALE_FILES: &[&str] =
    &["main.ftl", "review.ftl", "gallery.ftl", "console.ftl", "report.ftl"];

struct I18n {
    kk: Bundle,
    ru: Bundle,
    en: Bundle,
}

static I18N: LazyLock<I18n> = LazyLock::new(|| I18n {
    kk: bundle(Lang::Kk, &locale_files!("kk")),
    ru: bundle(Lang::Ru, &locale_files!("ru")),
    en: bundle(Lang::En, &locale_files!("en")),
});

fn bundle(lang: Lang, files: &[(&str, &str)]) -> Bundle {
    let id: unic_langid::LanguageIdentifier =
        lang.code().parse().unwrap_or_else(|_| unic_langid::LanguageIdentifier::default());
    let mut bundle = FluentBundle::new_concurrent(vec![id]);
    // Unicode isolation marks around arguments would show up in attributes and tests; every
    // argument here is a number or a name in the same script.
    bundle.set_use_isolating(false);
    for (name, source) in files {
        // A broken file still yields the messages that parsed; the unit tests refuse any error.
        let resource = FluentResource::try_new((*source).to_owned()).unwrap_or_else(|(r, e)| {
            tracing::error!(file = name, lang = lang.code(), errors = ?e, "bad message file");
            r
        });
        if let Err(e) = bundle.add_resource(resource) {
            tracing::error!(file = name, lang = lang.code(), errors = ?e, "bad message file");
        }
    }
    bundle
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use fluent_bundle::FluentResource;

    use super::*;

    /// Message ids of an FTL source (its messages, not its terms).
    fn message_ids(r: &FluentResource) -> BTreeSet<String> {
        r.entries()
            .filter_map(|e| match e {
                fluent_syntax::ast::Entry::Message(m) => Some(m.id.name.to_owned()),
                _ => None,
            })
            .collect()
    }

    fn locales() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("locales")
    }

    fn ids(lang: &str) -> BTreeSet<String> {
        let mut all = BTreeSet::new();
        for file in LOCALE_FILES {
            let source = std::fs::read_to_string(locales().join(lang).join(file)).unwrap();
            let r = FluentResource::try_new(source)
                .unwrap_or_else(|(_, e)| panic!("{lang}/{file} does not parse: {e:?}"));
            for id in message_ids(&r) {
                assert!(all.insert(id.clone()), "{lang}: message {id} defined twice");
            }
        }
        all
    }

    #[test]
    fn every_message_exists_in_every_language() {
        let en = ids("en");
        assert!(!en.is_empty());
        for lang in ["kk", "ru"] {
            let other = ids(lang);
            let missing: Vec<_> = en.difference(&other).collect();
            let extra: Vec<_> = other.difference(&en).collect();
            assert!(missing.is_empty(), "{lang} lacks {missing:?}");
            assert!(extra.is_empty(), "{lang} has messages English lacks: {extra:?}");
        }
    }

    #[test]
    fn locale_file_list_matches_the_directories() {
        for lang in Lang::ALL {
            let mut found: Vec<String> = std::fs::read_dir(locales().join(lang.code()))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".ftl"))
                .collect();
            found.sort();
            let mut listed: Vec<String> = LOCALE_FILES.iter().map(|s| s.to_string()).collect();
            listed.sort();
            assert_eq!(found, listed, "locales/{} and LOCALE_FILES differ", lang.code());
        }
    }

    /// Every `t("id"`, `t1("id"` and `t_args("id"` of every template names an existing message.
    #[test]
    fn every_template_message_exists() {
        let en = ids("en");
        let mut checked = 0;
        let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for id in template_ids(&text) {
                    assert!(en.contains(&id), "{} uses unknown message {id}", path.display());
                    checked += 1;
                }
            }
        }
        assert!(checked > 5, "the scan found only {checked} message uses");
    }

    /// Message ids used by a template: the first string argument of `t(`, `t1(`, `t_args(`.
    fn template_ids(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for call in ["t(\"", "t1(\"", "t_args(\""] {
            let mut rest = text;
            while let Some(i) = rest.find(call) {
                let before = rest[..i].chars().last();
                rest = &rest[i + call.len()..];
                // `.t("` only: not e.g. `format("`.
                if before != Some('.') {
                    continue;
                }
                if let Some(end) = rest.find('"') {
                    out.push(rest[..end].to_owned());
                }
            }
        }
        out
    }

    #[test]
    fn language_negotiation() {
        let check = |header: &str, expected: Option<Lang>| {
            assert_eq!(Lang::from_accept_language(header), expected, "{header}");
        };
        check("ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7", Some(Lang::Ru));
        check("de-DE,en;q=0.5,kk;q=0.8", Some(Lang::Kk));
        check("fr, de", None);
        check("en;q=0, ru;q=0.1", Some(Lang::Ru));
        check("", None);
        check("*", None);
        check("EN-gb", Some(Lang::En));
    }

    #[test]
    fn messages_format_with_arguments() {
        assert_eq!(Lang::En.t("site-name"), "Hattama");
        assert_eq!(Lang::En.t("no-such-message"), "no-such-message");
        assert!(Lang::Ru.t1("error-page-code", "code", 404u64).contains("404"));
    }
}
