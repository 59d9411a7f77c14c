"""memcrm's foundation: domain types, errors, settings, validation, auth and tracing."""
