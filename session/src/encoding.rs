//! How a [`SessionSpec`] and its [`Configuration`] are serialized (journal records and the
//! daemon's messages).
//!
//! # Why lists of tagged fields
//! postcard is not self-describing: a struct that gains a field no longer reads any record
//! written before. So a spec is encoded as a list of `SpecField`s and a configuration as a
//! list of `Setting`s. A later version adds a setting as a **new variant at the end** of
//! the enum and still reads every older record; a setting missing from a record takes its
//! value from [`Configuration::predating`], the behaviour from before the setting existed.
//! Never reorder or remove variants: their index is the tag on disk.
//!
//! # Invariants
//! - Writing emits every field once, in enum order; reading refuses a field given twice and a
//!   spec without both URLs or without a configuration.
//! - A record from a newer version (an unknown tag) does not decode: the reader fails loudly
//!   instead of dropping a setting it does not know.
//!
//! # Older journal formats
//! Journal format 1 stored both as plain structs (no compression setting). The journal reads
//! an old record inside [`read_format`], which tells every `Deserialize` implementation that
//! cares (these two, and the journal's session state) which format's layout to expect, for
//! the current thread.

use std::cell::Cell;
use std::collections::HashSet;

use mutagen_core::{
    Compression, IgnoreSyntax, PermissionsMode, ProbeMode, ScanMode, StageMode, SymlinkMode,
};
use mutagen_reconcile::Mode;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::configuration::{
    Configuration, EndpointOverrides, Environment, Ownership, SessionSpec, WatchMode,
};
use crate::labels::Labels;

/// One field of a [`SessionSpec`]; the variant index is the tag on disk.
#[derive(Serialize, Deserialize)]
enum SpecField {
    Alpha(String),
    Beta(String),
    Name(String),
    Labels(Labels),
    Paused(bool),
    Configuration(Box<Configuration>),
    AlphaEnvironment(Environment),
    BetaEnvironment(Environment),
}

/// One setting of a [`Configuration`]; the variant index is the tag on disk.
#[derive(Serialize, Deserialize)]
enum Setting {
    Mode(Mode),
    Ignores(Vec<String>),
    IgnoreVcs(bool),
    SymlinkMode(SymlinkMode),
    WatchMode(WatchMode),
    WatchPollingInterval(u32),
    Compression(Compression),
    AllowRootEmptying(bool),
    AllowRootDeletion(bool),
    StageMode(StageMode),
    AlphaOverrides(EndpointOverrides),
    BetaOverrides(EndpointOverrides),
    IgnoreSyntax(IgnoreSyntax),
    IgnoreVcsIgnored(bool),
    MaxEntryCount(u64),
    MaxStagingFileSize(u64),
    ProbeMode(ProbeMode),
    ScanMode(ScanMode),
    PermissionsMode(PermissionsMode),
    Ownership(Ownership),
}

/// One field of an [`Ownership`]; the variant index is the tag on disk. Only set fields are
/// written.
#[derive(Serialize, Deserialize)]
enum OwnershipField {
    FileMode(u32),
    DirectoryMode(u32),
    Owner(String),
    Group(String),
}

impl Serialize for Ownership {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields: Vec<OwnershipField> = [
            self.file_mode.map(OwnershipField::FileMode),
            self.directory_mode.map(OwnershipField::DirectoryMode),
            self.owner.clone().map(OwnershipField::Owner),
            self.group.clone().map(OwnershipField::Group),
        ]
        .into_iter()
        .flatten()
        .collect();
        fields.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Ownership {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Ownership, D::Error> {
        let mut ownership = Ownership::default();
        let mut seen = HashSet::new();
        for field in Vec::<OwnershipField>::deserialize(deserializer)? {
            once(&mut seen, &field)?;
            match field {
                OwnershipField::FileMode(bits) => ownership.file_mode = Some(bits),
                OwnershipField::DirectoryMode(bits) => ownership.directory_mode = Some(bits),
                OwnershipField::Owner(owner) => ownership.owner = Some(owner),
                OwnershipField::Group(group) => ownership.group = Some(group),
            }
        }
        Ok(ownership)
    }
}

/// One setting of an [`EndpointOverrides`]; the variant index is the tag on disk. Only the
/// overridden settings are written.
#[derive(Serialize, Deserialize)]
enum EndpointSetting {
    WatchMode(WatchMode),
    WatchPollingInterval(u32),
    StageMode(StageMode),
    Compression(Compression),
    ProbeMode(ProbeMode),
    ScanMode(ScanMode),
    Ownership(Ownership),
}

thread_local! {
    static FORMAT: Cell<Option<u8>> = const { Cell::new(None) };
}

/// Runs `read` with records decoded in the layout of journal format `format` (an older one).
pub fn read_format<T>(format: u8, read: impl FnOnce() -> T) -> T {
    struct Restore(Option<u8>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORMAT.with(|flag| flag.set(self.0));
        }
    }
    let _restore = Restore(FORMAT.with(|flag| flag.replace(Some(format))));
    read()
}

/// The older journal format being read on this thread, if any (see [`read_format`]).
pub fn reading_format() -> Option<u8> {
    FORMAT.with(Cell::get)
}

fn format_1() -> bool {
    reading_format() == Some(1)
}

/// Refuses a tag seen before.
fn once<T, E: serde::de::Error>(
    seen: &mut HashSet<std::mem::Discriminant<T>>,
    field: &T,
) -> Result<(), E> {
    if seen.insert(std::mem::discriminant(field)) {
        Ok(())
    } else {
        Err(E::custom("a field is given twice"))
    }
}

impl Serialize for Configuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        [
            Setting::Mode(self.mode),
            Setting::Ignores(self.ignores.clone()),
            Setting::IgnoreVcs(self.ignore_vcs),
            Setting::SymlinkMode(self.symlink_mode),
            Setting::WatchMode(self.watch_mode),
            Setting::WatchPollingInterval(self.watch_polling_interval),
            Setting::Compression(self.compression),
            Setting::AllowRootEmptying(self.allow_root_emptying),
            Setting::AllowRootDeletion(self.allow_root_deletion),
            Setting::StageMode(self.stage_mode),
            Setting::AlphaOverrides(self.alpha.clone()),
            Setting::BetaOverrides(self.beta.clone()),
            Setting::IgnoreSyntax(self.ignore_syntax),
            Setting::IgnoreVcsIgnored(self.ignore_vcs_ignored),
            Setting::MaxEntryCount(self.max_entry_count),
            Setting::MaxStagingFileSize(self.max_staging_file_size),
            Setting::ProbeMode(self.probe_mode),
            Setting::ScanMode(self.scan_mode),
            Setting::PermissionsMode(self.permissions_mode),
            Setting::Ownership(self.ownership.clone()),
        ]
        .as_slice()
        .serialize(serializer)
    }
}

/// Journal format 1's configuration.
#[derive(Deserialize)]
struct ConfigurationFormat1 {
    mode: Mode,
    ignores: Vec<String>,
    ignore_vcs: bool,
    symlink_mode: SymlinkMode,
    watch_mode: WatchMode,
    watch_polling_interval: u32,
}

impl<'de> Deserialize<'de> for Configuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Configuration, D::Error> {
        if format_1() {
            let old = ConfigurationFormat1::deserialize(deserializer)?;
            return Ok(Configuration {
                mode: old.mode,
                ignores: old.ignores,
                ignore_vcs: old.ignore_vcs,
                symlink_mode: old.symlink_mode,
                watch_mode: old.watch_mode,
                watch_polling_interval: old.watch_polling_interval,
                ..Configuration::predating()
            });
        }
        let mut configuration = Configuration::predating();
        let mut seen = HashSet::new();
        for setting in Vec::<Setting>::deserialize(deserializer)? {
            once(&mut seen, &setting)?;
            match setting {
                Setting::Mode(mode) => configuration.mode = mode,
                Setting::Ignores(ignores) => configuration.ignores = ignores,
                Setting::IgnoreVcs(ignore_vcs) => configuration.ignore_vcs = ignore_vcs,
                Setting::SymlinkMode(mode) => configuration.symlink_mode = mode,
                Setting::WatchMode(mode) => configuration.watch_mode = mode,
                Setting::WatchPollingInterval(seconds) => {
                    configuration.watch_polling_interval = seconds;
                }
                Setting::Compression(compression) => configuration.compression = compression,
                Setting::AllowRootEmptying(allowed) => configuration.allow_root_emptying = allowed,
                Setting::AllowRootDeletion(allowed) => configuration.allow_root_deletion = allowed,
                Setting::StageMode(mode) => configuration.stage_mode = mode,
                Setting::AlphaOverrides(overrides) => configuration.alpha = overrides,
                Setting::BetaOverrides(overrides) => configuration.beta = overrides,
                Setting::IgnoreSyntax(syntax) => configuration.ignore_syntax = syntax,
                Setting::IgnoreVcsIgnored(skip) => configuration.ignore_vcs_ignored = skip,
                Setting::MaxEntryCount(count) => configuration.max_entry_count = count,
                Setting::MaxStagingFileSize(size) => configuration.max_staging_file_size = size,
                Setting::ProbeMode(mode) => configuration.probe_mode = mode,
                Setting::ScanMode(mode) => configuration.scan_mode = mode,
                Setting::PermissionsMode(mode) => configuration.permissions_mode = mode,
                Setting::Ownership(ownership) => configuration.ownership = ownership,
            }
        }
        Ok(configuration)
    }
}

impl Serialize for EndpointOverrides {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let settings: Vec<EndpointSetting> = [
            self.watch_mode.map(EndpointSetting::WatchMode),
            self.watch_polling_interval.map(EndpointSetting::WatchPollingInterval),
            self.stage_mode.map(EndpointSetting::StageMode),
            self.compression.map(EndpointSetting::Compression),
            self.probe_mode.map(EndpointSetting::ProbeMode),
            self.scan_mode.map(EndpointSetting::ScanMode),
            (self.ownership != Ownership::default())
                .then(|| EndpointSetting::Ownership(self.ownership.clone())),
        ]
        .into_iter()
        .flatten()
        .collect();
        settings.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for EndpointOverrides {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EndpointOverrides, D::Error> {
        let mut overrides = EndpointOverrides::default();
        let mut seen = HashSet::new();
        for setting in Vec::<EndpointSetting>::deserialize(deserializer)? {
            once(&mut seen, &setting)?;
            match setting {
                EndpointSetting::WatchMode(mode) => overrides.watch_mode = Some(mode),
                EndpointSetting::WatchPollingInterval(seconds) => {
                    overrides.watch_polling_interval = Some(seconds);
                }
                EndpointSetting::StageMode(mode) => overrides.stage_mode = Some(mode),
                EndpointSetting::Compression(compression) => {
                    overrides.compression = Some(compression);
                }
                EndpointSetting::ProbeMode(mode) => overrides.probe_mode = Some(mode),
                EndpointSetting::ScanMode(mode) => overrides.scan_mode = Some(mode),
                EndpointSetting::Ownership(ownership) => overrides.ownership = ownership,
            }
        }
        Ok(overrides)
    }
}

impl Serialize for SessionSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        [
            SpecField::Alpha(self.alpha.clone()),
            SpecField::Beta(self.beta.clone()),
            SpecField::Name(self.name.clone()),
            SpecField::Labels(self.labels.clone()),
            SpecField::Paused(self.paused),
            SpecField::Configuration(self.configuration.clone()),
            SpecField::AlphaEnvironment(self.alpha_environment.clone()),
            SpecField::BetaEnvironment(self.beta_environment.clone()),
        ]
        .as_slice()
        .serialize(serializer)
    }
}

/// Journal format 1's spec.
#[derive(Deserialize)]
struct SessionSpecFormat1 {
    alpha: String,
    beta: String,
    name: String,
    labels: Labels,
    paused: bool,
    configuration: Configuration,
}

impl<'de> Deserialize<'de> for SessionSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SessionSpec, D::Error> {
        if format_1() {
            let old = SessionSpecFormat1::deserialize(deserializer)?;
            return Ok(SessionSpec {
                alpha: old.alpha,
                beta: old.beta,
                name: old.name,
                labels: old.labels,
                paused: old.paused,
                configuration: Box::new(old.configuration),
                alpha_environment: Environment::new(),
                beta_environment: Environment::new(),
            });
        }
        let (mut alpha, mut beta, mut configuration) = (None, None, None);
        let mut spec = SessionSpec {
            alpha: String::new(),
            beta: String::new(),
            name: String::new(),
            labels: Labels::new(),
            paused: false,
            configuration: Box::new(Configuration::predating()),
            alpha_environment: Environment::new(),
            beta_environment: Environment::new(),
        };
        let mut seen = HashSet::new();
        for field in Vec::<SpecField>::deserialize(deserializer)? {
            once(&mut seen, &field)?;
            match field {
                SpecField::Alpha(url) => alpha = Some(url),
                SpecField::Beta(url) => beta = Some(url),
                SpecField::Name(name) => spec.name = name,
                SpecField::Labels(labels) => spec.labels = labels,
                SpecField::Paused(paused) => spec.paused = paused,
                SpecField::Configuration(value) => configuration = Some(value),
                SpecField::AlphaEnvironment(environment) => spec.alpha_environment = environment,
                SpecField::BetaEnvironment(environment) => spec.beta_environment = environment,
            }
        }
        spec.alpha = alpha.ok_or_else(|| D::Error::custom("a session without an alpha URL"))?;
        spec.beta = beta.ok_or_else(|| D::Error::custom("a session without a beta URL"))?;
        spec.configuration =
            configuration.ok_or_else(|| D::Error::custom("a session without a configuration"))?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SessionSpec {
        SessionSpec {
            alpha: "/a".into(),
            beta: "host:b".into(),
            name: "n".into(),
            labels: Labels::from([("k".to_owned(), "v".to_owned())]),
            paused: true,
            configuration: Box::new(Configuration {
                compression: Compression::Zstd,
                ignores: vec!["*.o".into()],
                allow_root_deletion: true,
                stage_mode: StageMode::Internal,
                ignore_syntax: IgnoreSyntax::Docker,
                ignore_vcs_ignored: true,
                max_entry_count: 1000,
                max_staging_file_size: 1 << 30,
                permissions_mode: PermissionsMode::Manual,
                ownership: Ownership { file_mode: Some(0o640), ..Ownership::default() },
                beta: EndpointOverrides {
                    ownership: Ownership {
                        owner: Some("id:7".into()),
                        group: Some("staff".into()),
                        ..Ownership::default()
                    },
                    scan_mode: Some(ScanMode::Full),
                    watch_mode: Some(WatchMode::NoWatch),
                    compression: Some(Compression::None),
                    ..EndpointOverrides::default()
                },
                ..Configuration::default()
            }),
            alpha_environment: Environment::new(),
            beta_environment: Environment::from([("DOCKER_HOST".into(), "unix:///d.sock".into())]),
        }
    }

    #[test]
    fn specs_round_trip() {
        let bytes = postcard::to_stdvec(&spec()).expect("encode");
        assert_eq!(postcard::from_bytes::<SessionSpec>(&bytes).expect("decode"), spec());
    }

    #[test]
    fn missing_settings_predate_and_missing_urls_are_refused() {
        // Only the URLs and an empty configuration: every setting takes its old behaviour.
        let fields = [
            SpecField::Alpha("/a".into()),
            SpecField::Beta("/b".into()),
            SpecField::Configuration(Box::new(Configuration::predating())),
        ];
        let mut bytes = postcard::to_stdvec(fields.as_slice()).expect("encode");
        let decoded: SessionSpec = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(decoded.configuration.compression, Compression::None);
        let empty: Vec<Setting> = Vec::new();
        let settings = postcard::to_stdvec(&empty).expect("encode");
        assert_eq!(
            postcard::from_bytes::<Configuration>(&settings).expect("decode"),
            Configuration::predating()
        );

        let no_beta =
            postcard::to_stdvec([SpecField::Alpha("/a".into())].as_slice()).expect("encode");
        // (postcard drops the message of a custom error.)
        assert!(postcard::from_bytes::<SessionSpec>(&no_beta).is_err());

        // The same field twice.
        bytes = postcard::to_stdvec(
            [
                SpecField::Alpha("/a".into()),
                SpecField::Alpha("/c".into()),
                SpecField::Beta("/b".into()),
            ]
            .as_slice(),
        )
        .expect("encode");
        assert!(postcard::from_bytes::<SessionSpec>(&bytes).is_err());

        // An unknown tag (a newer version's setting).
        let unknown = [1u8, 99, 0];
        assert!(postcard::from_bytes::<Configuration>(&unknown).is_err());
    }

    #[test]
    fn format_1_is_read_only_inside_its_scope() {
        #[derive(Serialize)]
        struct Old<'a> {
            mode: Mode,
            ignores: &'a [String],
            ignore_vcs: bool,
            symlink_mode: SymlinkMode,
            watch_mode: WatchMode,
            watch_polling_interval: u32,
        }
        let old = Old {
            mode: Mode::OneWayReplica,
            ignores: &["x".to_owned()],
            ignore_vcs: true,
            symlink_mode: SymlinkMode::PosixRaw,
            watch_mode: WatchMode::NoWatch,
            watch_polling_interval: 7,
        };
        let bytes = postcard::to_stdvec(&old).expect("encode");
        let read = read_format(1, || postcard::from_bytes::<Configuration>(&bytes)).expect("v1");
        assert_eq!(
            read,
            Configuration {
                mode: Mode::OneWayReplica,
                ignores: vec!["x".into()],
                ignore_vcs: true,
                symlink_mode: SymlinkMode::PosixRaw,
                watch_mode: WatchMode::NoWatch,
                watch_polling_interval: 7,
                compression: Compression::None,
                allow_root_emptying: false,
                allow_root_deletion: false,
                stage_mode: StageMode::Auto,
                ignore_syntax: IgnoreSyntax::Mutagen,
                ignore_vcs_ignored: false,
                max_entry_count: 0,
                max_staging_file_size: 0,
                probe_mode: ProbeMode::Probe,
                scan_mode: ScanMode::Accelerated,
                permissions_mode: PermissionsMode::Portable,
                ownership: Ownership::default(),
                alpha: EndpointOverrides::default(),
                beta: EndpointOverrides::default(),
            }
        );
        assert!(!format_1(), "the scope ends with the call");
        assert_ne!(postcard::from_bytes::<Configuration>(&bytes).ok(), Some(read));
    }
}
