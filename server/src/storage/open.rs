//! [`open`]: the one way into storage, for the server and for every admin command, so that
//! which backend the settings name is decided in one place.

use std::sync::Arc;

use secrecy::ExposeSecret;

use super::{
    ConsoleStorage, GalleryStorage, PgStorage, ReviewStorage, SqliteStorage, Storage, StorageError,
};
use crate::objects::ObjectBackend;
use crate::settings::{BackendKind, Settings};

/// Every interface of one storage backend, as [`open`] returns it. `Arc<dyn Backend>` and
/// `&dyn Backend` coerce to each of them.
pub trait Backend: Storage + ReviewStorage + GalleryStorage + ConsoleStorage {}

impl<T: Storage + ReviewStorage + GalleryStorage + ConsoleStorage> Backend for T {}

/// Who opens the storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opener {
    /// The serving process: it also removes what a crash left (photos no capture references,
    /// upload files without a session).
    Server,
    /// An admin command, which may run beside a serving process and so never removes anything.
    Admin,
}

/// Opens (creating and migrating) the storage that `settings` name: the embedded default,
/// SQLite and files in `data_dir`, or PostgreSQL at `storage.database_url`. Either way the data
/// directory is made private first ([`super::make_private`]). For admin commands, which store
/// no photo: they need no object store.
pub fn open(settings: &Settings, opener: Opener) -> Result<Arc<dyn Backend>, StorageError> {
    open_with(settings, opener, None)
}

/// [`open`], for the server: with the app's object store (`objects::open`, opened once), where
/// the PostgreSQL backend keeps photos (the embedded one keeps them in its data directory, with
/// its own fsync order and group commit).
pub fn open_with(
    settings: &Settings,
    opener: Opener,
    objects: Option<Arc<dyn ObjectBackend>>,
) -> Result<Arc<dyn Backend>, StorageError> {
    match (settings.storage.backend, &settings.storage.database_url) {
        (BackendKind::Embedded, _) => {
            Ok(Arc::new(SqliteStorage::open(&settings.data_dir, opener == Opener::Server)?))
        }
        (BackendKind::Postgres, Some(url)) => {
            // The data directory still holds the keys (and, with local objects, the objects).
            super::make_private(&settings.data_dir)?;
            let pg = PgStorage::open(url.expose_secret(), settings.storage.pool_size)?;
            Ok(Arc::new(match objects {
                Some(objects) => pg.with_photos(objects),
                None => pg,
            }))
        }
        // Refused by `Settings::validate` already.
        (BackendKind::Postgres, None) => Err(StorageError::NotFound(
            "storage.database_url (HATTAMA__STORAGE__DATABASE_URL)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server and the admin commands name no backend: they all go through [`open`].
    #[test]
    fn the_server_and_every_admin_command_open_storage_through_open() {
        for (file, text) in
            [("main.rs", include_str!("../main.rs")), ("startup.rs", include_str!("../startup.rs"))]
        {
            assert!(!text.contains("SqliteStorage"), "{file} names the SQLite backend");
            assert!(
                text.contains("storage::open(&settings") || text.contains("storage::open_with("),
                "{file} does not call storage::open"
            );
        }
    }

    #[test]
    fn open_creates_storage_that_admin_commands_and_the_server_share() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::for_dir(dir.path());
        let admin = open(&settings, Opener::Admin).unwrap();
        assert_eq!(admin.log_size().unwrap(), 0);
        assert!(admin.users().unwrap().is_empty());
        drop(admin);
        let server = open(&settings, Opener::Server).unwrap();
        assert_eq!(server.log_size().unwrap(), 0);
    }
}
