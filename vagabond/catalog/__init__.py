"""Box catalogs: versions, stores (directory, S3, an OCI registry), the publish transaction, and reading a catalog."""
