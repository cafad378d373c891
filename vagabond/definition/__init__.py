"""What the user wrote: box files (schema, loading with file:line), the project and where boxes are found."""
