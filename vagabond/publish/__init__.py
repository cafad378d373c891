"""Box catalogs: versions, stores (directory, S3, OCI), the publish transaction, and reading a catalog."""
