//! Layered settings: built-in defaults, then an optional TOML file, then `HATTAMA__SECTION__KEY`
//! environment variables, then command-line flags. Validated once, at start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// All settings of the server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the database, photos, uploads and keys live.
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The server's public base URL, used in enrollment URIs (e.g. `https://hattama.kz`).
    pub public_url: Option<String>,
    /// The log's origin line (its name in checkpoints): a unique name without spaces or '+'.
    pub log_origin: String,
    /// Upload limits.
    pub limits: Limits,
    /// Worker threads of the HTTP server (0: one per core).
    pub workers: usize,
    /// The review UI.
    pub review: ReviewSettings,
    /// The format of the logs on stderr (`HATTAMA_LOG_FORMAT` overrides it).
    pub log_format: LogFormat,
    /// Reverse proxies whose `X-Forwarded-For` is believed (addresses or CIDR blocks, a list or
    /// a comma-separated string): the client's address is then the right-most one of that
    /// header that is not a trusted proxy. Empty (the default): the TCP peer is the client.
    #[serde(deserialize_with = "proxies")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A C2SP tlog-policy file naming the witnesses (each with its submission URL) that the
    /// server asks to cosign every new checkpoint, and their quorum (`docs/witness.md`). None:
    /// no witnesses.
    #[serde(default)]
    pub witness_policy: Option<PathBuf>,
    /// How long one request to a witness may take, in milliseconds.
    #[serde(default = "default_witness_timeout_ms")]
    pub witness_timeout_ms: u64,
    /// HTTPS on `listen` (`[tls]`). Without it the server speaks plain HTTP: on loopback, or
    /// behind a reverse proxy that terminates TLS (docs/operations.md).
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// Prometheus metrics at `/metrics` (`[metrics]`).
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// What `/readyz` asks of the server (`[readiness]`).
    #[serde(default)]
    pub readiness: ReadinessSettings,
    /// Requests per client and per device (`[rate_limits]`).
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// Which storage backend holds the data (`[storage]`).
    #[serde(default)]
    pub storage: StorageSettings,
    /// The folder of the DejaVu fonts (`DejaVuSans.ttf`, `DejaVuSans-Bold.ttf`: Debian's
    /// fonts-dejavu-core) that the evidence packages' PDF reports embed; they cover every
    /// Kazakh letter. Read when a report is made; without them a package has no PDF report.
    #[serde(default = "default_report_fonts")]
    pub report_fonts: PathBuf,
}

/// Which storage backend: the embedded default (SQLite and files in `data_dir`), or
/// PostgreSQL (for several instances on one database).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// SQLite and files in `data_dir`.
    #[default]
    Embedded,
    /// PostgreSQL at `storage.database_url`.
    Postgres,
}

/// `[storage]`: the backend, and for PostgreSQL its URL (a secret: set it in the environment,
/// `HATTAMA__STORAGE__DATABASE_URL`, rather than in a file) and its pool's size.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// `embedded` (the default) or `postgres`.
    #[serde(default)]
    pub backend: BackendKind,
    /// The PostgreSQL database (`postgres://user:password@host:port/db` or libpq's
    /// `host=… user=… dbname=…`); never printed.
    #[serde(default)]
    pub database_url: Option<secrecy::SecretString>,
    /// Connections to PostgreSQL this instance keeps at most.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Where objects (log tiles and checkpoints, thumbnails) are kept (`[storage.objects]`).
    #[serde(default)]
    pub objects: ObjectSettings,
}

/// Which object store: the data directory's files, or an S3-compatible bucket.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ObjectsKind {
    /// Files under `data_dir` (`log/`, `thumbs/`, `medium/`).
    #[default]
    Local,
    /// An S3-compatible bucket (`endpoint`, `bucket`, `region`, credentials).
    S3,
}

/// `[storage.objects]`: the object store (`server/src/objects/`). For S3, the credentials are
/// secrets: give them in the environment, `HATTAMA__STORAGE__OBJECTS__ACCESS_KEY_ID` and
/// `HATTAMA__STORAGE__OBJECTS__SECRET_ACCESS_KEY`, rather than in a file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectSettings {
    /// `local` (the default) or `s3`.
    #[serde(default)]
    pub kind: ObjectsKind,
    /// The S3 endpoint, `https://host[:port]` (`http://` only on a loopback address, or with
    /// `allow_http`); requests are path-style (`ENDPOINT/BUCKET/KEY`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket (it must exist).
    #[serde(default)]
    pub bucket: Option<String>,
    /// A folder of the bucket the objects are kept under (`hattama/`), so that one bucket can
    /// hold several logs; none by default.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The region the requests are signed for (Garage: its `s3_region`).
    #[serde(default = "default_region")]
    pub region: String,
    /// The access key id; never printed.
    #[serde(default)]
    pub access_key_id: Option<secrecy::SecretString>,
    /// The secret access key; never printed.
    #[serde(default)]
    pub secret_access_key: Option<secrecy::SecretString>,
    /// Allows a plain `http://` endpoint that is not on a loopback address (a private network
    /// the operator trusts); off by default.
    #[serde(default)]
    pub allow_http: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

impl Default for ObjectSettings {
    fn default() -> Self {
        Self {
            kind: ObjectsKind::Local,
            endpoint: None,
            bucket: None,
            prefix: None,
            region: default_region(),
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
        }
    }
}

impl ObjectSettings {
    /// Whether nothing between the server and the endpoint can change a request's body: HTTPS,
    /// or plain HTTP to this machine. Then the S3 store does not sign bodies (`UNSIGNED-PAYLOAD`),
    /// which spares hashing every photo once more on each side; a plain-HTTP endpoint on
    /// another machine (`allow_http`) keeps signed bodies.
    pub fn transport_protects_bodies(&self) -> bool {
        let endpoint = self.endpoint.as_deref().unwrap_or_default();
        endpoint.starts_with("https://")
            || endpoint.strip_prefix("http://").is_some_and(is_loopback)
    }

    /// What is wrong with these settings, if anything.
    fn check(&self) -> Result<(), String> {
        if self.kind == ObjectsKind::Local {
            return match (&self.endpoint, &self.bucket) {
                (None, None) => Ok(()),
                _ => Err("storage.objects.endpoint and bucket are set but storage.objects.kind \
                          is \"local\": set kind = \"s3\" to use the bucket"
                    .into()),
            };
        }
        let env = |name: &str| format!("HATTAMA__STORAGE__OBJECTS__{}", name.to_uppercase());
        for (name, set) in [
            ("endpoint", self.endpoint.is_some()),
            ("bucket", self.bucket.as_deref().is_some_and(|b| !b.is_empty())),
            ("access_key_id", self.access_key_id.is_some()),
            ("secret_access_key", self.secret_access_key.is_some()),
        ] {
            if !set {
                return Err(format!(
                    "storage.objects.kind = \"s3\" needs storage.objects.{name}: set {}",
                    env(name)
                ));
            }
        }
        if let Some(prefix) = &self.prefix
            && crate::objects::ObjectKey::new(prefix.trim_end_matches('/')).is_err()
        {
            return Err(format!(
                "storage.objects.prefix {prefix:?} must be a folder name: letters, digits, \
                 '.', '_', '-', folders separated by '/'"
            ));
        }
        let endpoint = self.endpoint.as_deref().unwrap_or_default();
        let host = if let Some(rest) = endpoint.strip_prefix("https://") {
            rest
        } else if let Some(rest) = endpoint.strip_prefix("http://") {
            if !self.allow_http && !is_loopback(rest) {
                return Err(format!(
                    "storage.objects.endpoint {endpoint} is plain HTTP to another machine: use \
                     https://, or set storage.objects.allow_http = true on a network you trust"
                ));
            }
            rest
        } else {
            return Err(format!(
                "storage.objects.endpoint must start with https:// or http://, not {endpoint:?}"
            ));
        };
        if host.is_empty() || host.starts_with('/') {
            return Err(format!("storage.objects.endpoint {endpoint:?} names no host"));
        }
        Ok(())
    }
}

/// Whether the authority at the start of `rest` (`host[:port][/...]`) is a loopback address.
fn is_loopback(rest: &str) -> bool {
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn default_pool_size() -> u32 {
    16
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            backend: BackendKind::Embedded,
            database_url: None,
            pool_size: default_pool_size(),
            objects: ObjectSettings::default(),
        }
    }
}

fn default_report_fonts() -> PathBuf {
    PathBuf::from("/usr/share/fonts/truetype/dejavu")
}

fn default_witness_timeout_ms() -> u64 {
    3000
}

/// HTTPS: the certificate chain and its key, as PEM files. Both are read again on `SIGHUP`
/// (connections already open keep the certificate they began with).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The certificate chain (PEM), the server's certificate first.
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `Strict-Transport-Security: max-age` in seconds on every answer (0: no header).
    #[serde(default = "default_hsts")]
    pub hsts_max_age_secs: u64,
}

fn default_hsts() -> u64 {
    365 * 24 * 3600
}

/// `/metrics`: on the main address only with `Authorization: Bearer <token>` (without a token
/// set it does not exist there: 404); on `listen`, a separate plain-HTTP address (loopback or a
/// private network), without a token.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// The bearer token a scraper sends (at least 16 characters).
    #[serde(default)]
    pub token: Option<String>,
    /// A separate address that serves only `/metrics`, without a token.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// `/readyz`: ready while storage answers, the log integrator runs and is at most
/// `max_log_lag_secs` behind, and the data directory's file system has at least
/// `limits.min_free_bytes` free (below that, uploads are refused anyway).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadinessSettings {
    /// The longest a stored capture may wait for a published checkpoint, in seconds.
    #[serde(default = "default_max_log_lag")]
    pub max_log_lag_secs: u64,
}

fn default_max_log_lag() -> u64 {
    30
}

impl Default for ReadinessSettings {
    fn default() -> Self {
        Self { max_log_lag_secs: default_max_log_lag() }
    }
}

/// One rate limit: `per_minute` requests a minute on average, `burst` at once (0 in either:
/// no limit).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests a minute, sustained.
    pub per_minute: u32,
    /// Requests at once, after a quiet moment.
    pub burst: u32,
}

impl Rate {
    const fn new(per_minute: u32, burst: u32) -> Self {
        Self { per_minute, burst }
    }
}

/// Rate limits (`ratelimit.rs`): per client address (the real client's, behind
/// `trusted_proxies`) for enrollment, logins, the public pages and API, and evidence downloads;
/// per device for new uploads. Sized so that election night (10,000 stations × 3 photos in three
/// hours, ten times over) and `scripts/bench ingest` are never refused (docs/operations.md).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// `POST /api/v1/enroll`, per client address.
    pub enroll: Rate,
    /// `POST /review/login`, per client address (failures have their own throttle).
    pub login: Rate,
    /// The public gallery, its JSON API and open data, per client address.
    pub public: Rate,
    /// Photos, thumbnails and manifests (`/photos/…`, `/api/v1/captures/…`), per client address.
    pub evidence: Rate,
    /// New uploads (`POST /files/`), per device.
    pub uploads: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enroll: Rate::new(600, 600),
            login: Rate::new(60, 100),
            public: Rate::new(6000, 2000),
            evidence: Rate::new(6000, 2000),
            uploads: Rate::new(6000, 1000),
        }
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// JSON lines, one object per event, for log collectors.
    Json,
}

/// `trusted_proxies`: a list of addresses or CIDR blocks, or one comma-separated string of them
/// (as an environment variable gives it).
fn proxies<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        List(Vec<String>),
        Text(String),
    }
    let items = match Given::deserialize(d)? {
        Given::List(list) => list,
        Given::Text(text) => text.split(',').map(str::to_owned).collect(),
    };
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "trusted_proxies: {s:?} is not an address or CIDR block"
                    ))
                })
        })
        .collect()
}

/// Settings of the coordinators' review UI.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewSettings {
    /// How long a session lasts after login, in seconds.
    pub session_ttl_secs: u64,
    /// Failed logins of one user name before each attempt must wait a doubling delay (a client
    /// address may fail ten times as many per window, then waits for the window's end).
    pub login_max_failures: usize,
    /// How long failures are remembered (and the window of a client's failures), in seconds.
    pub login_window_secs: u64,
    /// The longest delay between two attempts for one user name, in seconds.
    pub login_max_delay_secs: u64,
}

impl Default for ReviewSettings {
    fn default() -> Self {
        Self {
            session_ttl_secs: 12 * 3600,
            login_max_failures: 5,
            login_window_secs: 900,
            login_max_delay_secs: 60,
        }
    }
}

/// Numbered lines a page of a protocol holds, for [`Limits::captures_per_precinct`]: an A4
/// protocol form holds about twenty with its title, stamp and signatures.
pub const LINES_PER_PROTOCOL_PAGE: u64 = 20;

/// Photos one device may take of each page of a protocol, for
/// [`Limits::captures_per_precinct`]: the page whole, in parts and close up, and again when a
/// photo is blurred, in glare or of the wrong copy.
pub const PHOTOS_PER_PROTOCOL_PAGE: u64 = 10;

impl Limits {
    /// Most captures one device may store for one precinct of an election whose protocol has
    /// `protocol_lines` lines: `limits.max_captures_per_precinct` if set, else
    /// [`PHOTOS_PER_PROTOCOL_PAGE`] for each of its pages ([`LINES_PER_PROTOCOL_PAGE`] lines a
    /// page, at least one) and as many again for the rest of the wall (the announcement of the
    /// results, the enlarged copy): 20 for a protocol of up to 20 lines, 30 for up to 40.
    pub fn captures_per_precinct(&self, protocol_lines: u64) -> u64 {
        self.max_captures_per_precinct.unwrap_or_else(|| {
            let pages = protocol_lines.div_ceil(LINES_PER_PROTOCOL_PAGE).max(1);
            (pages + 1).saturating_mul(PHOTOS_PER_PROTOCOL_PAGE)
        })
    }
}

/// Hard limits on requests.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest photo accepted, in bytes.
    pub max_photo_bytes: u64,
    /// Largest JSON request body, in bytes.
    pub max_json_bytes: usize,
    /// Seconds a PATCH may wait for its next bytes before the server gives up on it.
    pub read_timeout_secs: u64,
    /// Most photo decodes (thumbnails) at once, server-wide; each may take up to
    /// `hattama_core::thumbnail::DECODE_BUDGET` (64 MiB) of memory.
    pub max_decodes: usize,
    /// Whether every upload's thumbnail, a JPEG's too, is made before its receipt. Off by
    /// default: decoding costs about 90 ms of CPU per 4 MB JPEG, ten times the rest of the
    /// upload (`scripts/bench ingest`). Either way a photo whose thumbnail cannot be made is
    /// refused at upload: a PNG is decoded then, a JPEG's headers are checked against the decode
    /// budget and its pixels are decoded leniently, so it always yields a thumbnail, made on its
    /// first request within the same decode slots and memory budget (docs/security.md).
    pub thumbnail_at_upload: bool,
    /// Most unfinished uploads one device may have open.
    pub max_open_uploads: usize,
    /// Most bytes (by their `Upload-Length`) of one device's unfinished uploads together.
    pub max_upload_bytes_in_flight: u64,
    /// Most captures one device may store for one precinct. Unset (the default), it is set
    /// from the election's shape ([`Limits::captures_per_precinct`]).
    #[serde(default)]
    pub max_captures_per_precinct: Option<u64>,
    /// Seconds after which an unfinished upload is discarded.
    pub upload_ttl_secs: u64,
    /// Free bytes on the data directory's file system below which uploads are refused with
    /// 507 (what is stored stays served).
    pub min_free_bytes: u64,
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A source could not be read or parsed.
    #[error("cannot load settings: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

/// Overrides given on the command line.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--data-dir DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--listen ADDR`.
    pub listen: Option<SocketAddr>,
}

impl Settings {
    /// Loads defaults → file → environment → flags, and validates.
    pub fn load(overrides: &Overrides) -> Result<Self, SettingsError> {
        let limits = hattama_core::media::MediaLimits::default();
        let mut builder = config::Config::builder()
            .set_default("data_dir", "hattama-data")?
            .set_default("listen", "127.0.0.1:8080")?
            .set_default("workers", 0)?
            .set_default("log_origin", "hattama.local/log")?
            .set_default("log_format", "text")?
            .set_default("limits.max_photo_bytes", limits.max_bytes)?
            .set_default("limits.max_json_bytes", 64 * 1024)?
            .set_default("limits.read_timeout_secs", 30)?
            .set_default("limits.max_decodes", 2)?
            .set_default("limits.thumbnail_at_upload", false)?
            .set_default("limits.max_open_uploads", 8)?
            .set_default("limits.max_upload_bytes_in_flight", 128u64 << 20)?
            .set_default("limits.upload_ttl_secs", 48 * 3600)?
            .set_default("limits.min_free_bytes", 1u64 << 30)?
            .set_default("review.session_ttl_secs", ReviewSettings::default().session_ttl_secs)?
            .set_default(
                "review.login_max_failures",
                ReviewSettings::default().login_max_failures as u64,
            )?
            .set_default("review.login_window_secs", ReviewSettings::default().login_window_secs)?
            .set_default(
                "review.login_max_delay_secs",
                ReviewSettings::default().login_max_delay_secs,
            )?
            .set_default("trusted_proxies", Vec::<String>::new())?;
        if let Some(file) = &overrides.config_file {
            builder = builder.add_source(config::File::from(file.as_path()).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("HATTAMA").prefix_separator("__").separator("__"),
        );
        if let Ok(format) = std::env::var("HATTAMA_LOG_FORMAT") {
            builder = builder.set_override("log_format", format)?;
        }
        if let Some(dir) = &overrides.data_dir {
            builder = builder.set_override("data_dir", dir.display().to_string())?;
        }
        if let Some(listen) = overrides.listen {
            builder = builder.set_override("listen", listen.to_string())?;
        }
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Settings for tests and tools: defaults with this data dir and port 0.
    pub fn for_dir(dir: &Path) -> Self {
        let limits = hattama_core::media::MediaLimits::default();
        Self {
            data_dir: dir.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            log_origin: "hattama.local/log".into(),
            limits: Limits {
                max_photo_bytes: limits.max_bytes,
                max_json_bytes: 64 * 1024,
                read_timeout_secs: 30,
                max_decodes: 2,
                thumbnail_at_upload: false,
                max_open_uploads: 8,
                max_captures_per_precinct: None,
                max_upload_bytes_in_flight: 128 << 20,
                upload_ttl_secs: 48 * 3600,
                min_free_bytes: 1 << 30,
            },
            workers: 2,
            review: ReviewSettings::default(),
            log_format: LogFormat::Text,
            trusted_proxies: Vec::new(),
            witness_policy: None,
            witness_timeout_ms: default_witness_timeout_ms(),
            report_fonts: default_report_fonts(),
            tls: None,
            metrics: MetricsSettings::default(),
            readiness: ReadinessSettings::default(),
            rate_limits: RateLimits::default(),
            storage: StorageSettings::default(),
        }
    }

    fn validate(&self) -> Result<(), SettingsError> {
        if self.log_origin.is_empty()
            || self.log_origin.chars().any(|c| c.is_whitespace() || c == '+')
        {
            return Err(SettingsError::Invalid(
                "log_origin must be non-empty, without spaces or '+'".into(),
            ));
        }
        let core = hattama_core::media::MediaLimits::default();
        if self.limits.max_photo_bytes == 0 || self.limits.max_photo_bytes > core.max_bytes {
            return Err(SettingsError::Invalid(format!(
                "limits.max_photo_bytes must be 1..={}",
                core.max_bytes
            )));
        }
        if !(256..=1024 * 1024).contains(&self.limits.max_json_bytes) {
            return Err(SettingsError::Invalid(
                "limits.max_json_bytes must be 256..=1048576".into(),
            ));
        }
        if self.review.session_ttl_secs == 0
            || self.review.login_window_secs == 0
            || self.review.login_max_delay_secs == 0
        {
            return Err(SettingsError::Invalid(
                "review.session_ttl_secs, review.login_window_secs and \
                 review.login_max_delay_secs must be positive"
                    .into(),
            ));
        }
        if self.review.login_max_failures == 0 {
            return Err(SettingsError::Invalid(
                "review.login_max_failures must be positive".into(),
            ));
        }
        if !(1..=64).contains(&self.limits.max_decodes) {
            return Err(SettingsError::Invalid("limits.max_decodes must be 1..=64".into()));
        }
        if self.limits.max_open_uploads == 0
            || self.limits.upload_ttl_secs == 0
            || self.limits.max_captures_per_precinct == Some(0)
        {
            return Err(SettingsError::Invalid(
                "limits.max_open_uploads, limits.max_captures_per_precinct and limits.upload_ttl_secs must be positive".into(),
            ));
        }
        if self.limits.max_upload_bytes_in_flight < self.limits.max_photo_bytes {
            return Err(SettingsError::Invalid(
                "limits.max_upload_bytes_in_flight must be at least limits.max_photo_bytes".into(),
            ));
        }
        if self.metrics.token.as_ref().is_some_and(|t| t.trim().len() < 16) {
            return Err(SettingsError::Invalid(
                "metrics.token must be at least 16 characters".into(),
            ));
        }
        if let Some(tls) = &self.tls {
            crate::tls::load(tls).map_err(|e| SettingsError::Invalid(format!("tls: {e}")))?;
        }
        if self.limits.read_timeout_secs == 0 {
            return Err(SettingsError::Invalid("limits.read_timeout_secs must be positive".into()));
        }
        match (self.storage.backend, &self.storage.database_url) {
            (BackendKind::Postgres, None) => {
                return Err(SettingsError::Invalid(
                    "storage.backend = \"postgres\" needs storage.database_url: set \
                     HATTAMA__STORAGE__DATABASE_URL to the database's URL"
                        .into(),
                ));
            }
            (BackendKind::Embedded, Some(_)) => {
                return Err(SettingsError::Invalid(
                    "storage.database_url is set but storage.backend is \"embedded\": set \
                     storage.backend = \"postgres\" to use the database, or unset the URL"
                        .into(),
                ));
            }
            _ => {}
        }
        if !(1..=1000).contains(&self.storage.pool_size) {
            return Err(SettingsError::Invalid("storage.pool_size must be 1..=1000".into()));
        }
        self.storage.objects.check().map_err(SettingsError::Invalid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_file(toml: &str) -> Result<Settings, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("settings.toml");
        std::fs::write(&file, toml).unwrap();
        Settings::load(&Overrides { config_file: Some(file), ..Overrides::default() })
    }

    /// Bodies go unsigned only where nothing on the way can change them.
    #[test]
    fn bodies_are_unsigned_only_over_https_or_to_this_machine() {
        let with = |endpoint: &str, allow_http: bool| ObjectSettings {
            endpoint: Some(endpoint.into()),
            allow_http,
            ..ObjectSettings::default()
        };
        assert!(with("https://s3.example.org", false).transport_protects_bodies());
        assert!(with("http://127.0.0.1:3900", false).transport_protects_bodies());
        assert!(with("http://[::1]:3900/", false).transport_protects_bodies());
        assert!(with("http://localhost:3900", false).transport_protects_bodies());
        assert!(!with("http://10.0.0.5:3900", true).transport_protects_bodies());
        assert!(!with("http://s3.example.org", true).transport_protects_bodies());
        assert!(!ObjectSettings::default().transport_protects_bodies());
    }

    #[test]
    fn objects_are_local_unless_s3_is_named_with_its_bucket_and_credentials() {
        use secrecy::ExposeSecret;
        let local = load_file("").unwrap().storage.objects;
        assert_eq!((local.kind, local.endpoint.is_none()), (ObjectsKind::Local, true));
        let s3 = "[storage.objects]\nkind = \"s3\"\nbucket = \"b\"\nregion = \"garage\"\n\
                  access_key_id = \"GK1\"\nsecret_access_key = \"s3cr3t\"\n";
        let ok = load_file(&format!("{s3}endpoint = \"http://127.0.0.1:3900\"\nprefix = \"a/b/\""))
            .unwrap()
            .storage
            .objects;
        assert_eq!(
            (ok.kind, ok.bucket.as_deref(), ok.region.as_str()),
            (ObjectsKind::S3, Some("b"), "garage")
        );
        assert_eq!(ok.secret_access_key.as_ref().map(|k| k.expose_secret()), Some("s3cr3t"));
        assert!(!format!("{ok:?}").contains("s3cr3t"), "a secret printed");
        for (endpoint, allow, fails) in [
            ("https://s3.example.org", false, None),
            ("http://localhost:3900", false, None),
            ("http://[::1]:3900/", false, None),
            ("http://10.0.0.5:3900", false, Some("plain HTTP")),
            ("http://10.0.0.5:3900", true, None),
            ("ftp://s3.example.org", false, Some("https://")),
            ("https://", false, Some("names no host")),
        ] {
            let file = format!("{s3}endpoint = \"{endpoint}\"\nallow_http = {allow}");
            match (load_file(&file), fails) {
                (Ok(_), None) => {}
                (Err(e), Some(want)) => assert!(e.to_string().contains(want), "{endpoint}: {e}"),
                (other, _) => panic!("{endpoint}: {:?}", other.map(|_| ())),
            }
        }
        // Each missing piece is named with the variable that sets it.
        let e =
            load_file("[storage.objects]\nkind = \"s3\"\nendpoint = \"https://x\"\nbucket = \"b\"")
                .unwrap_err()
                .to_string();
        assert!(e.contains("HATTAMA__STORAGE__OBJECTS__ACCESS_KEY_ID"), "{e}");
        let e = load_file(&format!("{s3}endpoint = \"https://x\"\nprefix = \"../up\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("prefix"), "{e}");
        let e = load_file("[storage.objects]\nbucket = \"b\"").unwrap_err().to_string();
        assert!(e.contains("kind = \"s3\""), "{e}");
        assert!(load_file("[storage.objects]\nkind = \"gcs\"").is_err());
    }

    #[test]
    fn log_format_is_text_or_json() {
        // (`HATTAMA_LOG_FORMAT` in the environment would override the file.)
        assert_eq!(load_file("").unwrap().log_format, LogFormat::Text);
        assert_eq!(load_file("log_format = \"json\"").unwrap().log_format, LogFormat::Json);
        let e = load_file("log_format = \"xml\"").unwrap_err().to_string();
        assert!(e.contains("xml"), "{e}");
    }

    #[test]
    fn storage_is_embedded_unless_postgres_is_named_with_its_url() {
        use secrecy::ExposeSecret;
        let embedded = load_file("").unwrap().storage;
        assert_eq!(
            (embedded.backend, embedded.database_url.is_none()),
            (BackendKind::Embedded, true)
        );
        let url = "host=/tmp user=hattama password=sekret";
        let pg = load_file(&format!(
            "[storage]\nbackend = \"postgres\"\ndatabase_url = \"{url}\"\npool_size = 4"
        ))
        .unwrap();
        assert_eq!(pg.storage.backend, BackendKind::Postgres);
        assert_eq!(pg.storage.database_url.as_ref().map(|u| u.expose_secret()), Some(url));
        assert_eq!(pg.storage.pool_size, 4);
        assert!(!format!("{pg:?}").contains("sekret"), "the URL is never printed");
        let e = load_file("[storage]\nbackend = \"postgres\"").unwrap_err().to_string();
        assert!(e.contains("HATTAMA__STORAGE__DATABASE_URL"), "{e}");
        let e = load_file("[storage]\ndatabase_url = \"host=/tmp\"").unwrap_err().to_string();
        assert!(e.contains("embedded"), "{e}");
        assert!(load_file("[storage]\nbackend = \"mysql\"").is_err());
    }
}
