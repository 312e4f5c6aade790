//! [`Storage::from_location`]: the storage a command-line location names — an `s3://` URL
//! (with the `s3` feature) or else a local directory — and [`LocationError`].
//!
//! Its own file because it needs both shapes of storage: `location` (the `Storage` type) and,
//! with the feature, `s3` (which builds on `location`).

use super::location::{Storage, StorageError};

impl Storage {
    /// The storage a command-line location names: an `s3://BUCKET/PREFIX?…` URL (with the
    /// `s3` feature; see `S3Options::from_url`, credentials from the AWS environment), or
    /// else a local directory.
    ///
    /// # Errors
    ///
    /// [`LocationError`]: an `s3://` URL in a build without S3 support, or one that is
    /// malformed.
    pub fn from_location(location: &str) -> Result<Self, LocationError> {
        if !location.starts_with("s3://") {
            return Ok(Storage::local(location));
        }
        #[cfg(feature = "s3")]
        {
            let options = super::s3::S3Options::from_url(location)?;
            Ok(Storage::s3(&options)?)
        }
        #[cfg(not(feature = "s3"))]
        Err(LocationError::NoS3Support {
            location: location.to_owned(),
        })
    }
}

/// Why a location ([`Storage::from_location`]) names no usable storage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocationError {
    /// An `s3://` location in a build without the `s3` feature.
    #[error(
        "{location:?} is an S3 location, but this build of weir has no S3 support (build it \
         with the `s3` cargo feature)"
    )]
    NoS3Support {
        /// The location given.
        location: String,
    },
    /// A malformed `s3://` URL.
    #[cfg(feature = "s3")]
    #[error(transparent)]
    S3Url(#[from] super::s3::S3UrlError),
    /// opendal refused the S3 configuration.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[cfg(not(feature = "s3"))]
    #[test]
    fn an_s3_location_without_the_feature_says_how_to_get_it() {
        let err = Storage::from_location("s3://bucket/prefix").unwrap_err();
        assert!(matches!(err, LocationError::NoS3Support { .. }));
        assert!(err.to_string().contains("`s3` cargo feature"), "{err}");
    }

    #[test]
    fn any_other_location_is_a_local_directory() {
        let storage = Storage::from_location("weir-data/checkpoint").unwrap();
        assert_eq!(storage.local_dir(), Some(Path::new("weir-data/checkpoint")));
    }
}
