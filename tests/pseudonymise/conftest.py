from pseudonymise.raw_fixtures import kek_env  # noqa: F401  (fixture)
