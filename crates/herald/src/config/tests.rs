//! The configuration's tests: resolution, the file, the README table.

use super::*;

mod resolution {
    use super::*;

    #[test]
    fn the_admin_token_never_shows_in_debug_output() {
        let mut settings = Settings::for_data_dir(Path::new("/tmp/x"));
        settings.admin_token = Some(Redacted("super-secret-token-value".into()));
        assert!(!format!("{settings:?}").contains("super-secret"));
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        let known = ids_of::<ServeArgs>();
        std::fs::write(&path, "listn = \"127.0.0.1:1\"").unwrap();
        let error = format!("{:#}", file_table(&path, &known).unwrap_err());
        assert!(error.contains("unknown key `listn`"), "{error}");
        std::fs::write(&path, "allow_http = true\ndata_dir = \"/tmp\"").unwrap();
        assert!(file_table(&path, &known).is_ok());
    }

    #[test]
    fn database_urls_choose_the_backend() {
        let sqlite =
            DatabaseSettings::resolve(None, Some("sqlite:///tmp/h.db".into()), None, None).unwrap();
        assert!(
            matches!(sqlite.database, Database::Sqlite { path } if path == Path::new("/tmp/h.db"))
        );
        let default = DatabaseSettings::resolve(None, None, None, None).unwrap();
        assert!(
            matches!(default.database, Database::Sqlite { path } if path == Path::new("herald-data/herald.db"))
        );
        let postgres = DatabaseSettings::resolve(
            None,
            Some("postgres://u:hunter2@db/h".into()),
            Some(8),
            None,
        )
        .unwrap();
        assert!(matches!(
            postgres.database,
            Database::Postgres {
                max_connections: 8,
                ..
            }
        ));
        assert!(
            !format!("{postgres:?}").contains("hunter2"),
            "the password never shows"
        );
        assert!(DatabaseSettings::resolve(None, Some("mysql://x".into()), None, None).is_err());
    }
}

mod file {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn from_file(text: &str) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, text)?;
        let args = Wrapper::try_parse_from(["herald", "--config", path.to_str().unwrap()])?;
        Settings::from_args(args.serve)
    }

    #[test]
    fn security_and_egress_settings_are_read_from_the_file() {
        let settings = from_file(
            r#"
            token_rate_limit = "off"
            max_endpoints_per_app = 5
            allowed_cidrs = "10.20.0.0/16, fd00::/8"
            dns_servers = "127.0.0.1:5353,10.0.0.2"
            egress_proxy = "http://proxy.internal:3128"
            egress_addresses = "203.0.113.7,203.0.113.8"
            secret_rotation_grace = "0"
            master_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
            "#,
        )
        .unwrap();
        assert_eq!(settings.token_rate_limit, None);
        assert_eq!(settings.max_endpoints_per_app, 5);
        assert!(settings.policy.permits("10.20.1.1".parse().unwrap()));
        assert!(!settings.policy.permits("10.21.1.1".parse().unwrap()));
        assert_eq!(
            settings.network.dns_servers,
            vec![
                "127.0.0.1:5353".parse().unwrap(),
                "10.0.0.2:53".parse().unwrap()
            ]
        );
        assert_eq!(
            settings.network.proxy.as_deref(),
            Some("http://proxy.internal:3128")
        );
        assert_eq!(settings.egress_addresses, ["203.0.113.7", "203.0.113.8"]);
        assert_eq!(settings.rotation_grace, Duration::ZERO);
        assert!(settings.database.sealing.current.is_some());
        assert!(
            !format!("{settings:?}").contains("AQEBAQEB"),
            "the key stays hidden"
        );
    }

    #[test]
    fn flags_and_the_environment_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(
            &path,
            "max_in_flight = 7\nmax_concurrent_requests = 9\nallow_http = true\nlisten = \"127.0.0.1:9999\"",
        )
        .unwrap();
        let args = Wrapper::try_parse_from([
            "herald",
            "--config",
            path.to_str().unwrap(),
            "--max-in-flight",
            "3",
        ])
        .unwrap();

        let settings = Settings::from_args(args.serve).unwrap();

        assert_eq!(settings.max_in_flight, 3, "the flag wins");
        assert_eq!(
            settings.max_concurrent_requests, 9,
            "the file fills the rest"
        );
        assert!(settings.policy.allow_http);
        assert_eq!(settings.listen, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(settings.max_in_flight_per_endpoint, 64, "the default stays");
    }

    /// The README's configuration table lists exactly the settings
    /// `herald serve` reads (each `HERALD_*` variable of its flags).
    #[test]
    fn the_readme_table_lists_every_setting_and_no_other() {
        let readme = include_str!("../../../../README.md");
        let table: std::collections::BTreeSet<String> = readme
            .lines()
            .filter(|line| line.starts_with("| `HERALD_"))
            .flat_map(|line| {
                let first = line.split('|').nth(1).unwrap_or_default().to_owned();
                first
                    .split('`')
                    .filter(|part| part.starts_with("HERALD_"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        let declared: std::collections::BTreeSet<String> =
            <ServeArgs as clap::Args>::augment_args(clap::Command::new("herald"))
                .get_arguments()
                .filter_map(|arg| arg.get_env())
                .map(|env| env.to_string_lossy().into_owned())
                .collect();
        let missing: Vec<_> = declared.difference(&table).collect();
        let extra: Vec<_> = table.difference(&declared).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "README lacks {missing:?}; README lists unknown {extra:?}"
        );
    }

    #[test]
    fn bad_security_settings_are_refused_with_their_name() {
        for (text, name) in [
            ("token_rate_limit = \"0\"", "HERALD_TOKEN_RATE_LIMIT"),
            ("max_endpoints_per_app = 0", "HERALD_MAX_ENDPOINTS_PER_APP"),
            ("allowed_cidrs = \"10.0.0.0/40\"", "HERALD_ALLOWED_CIDRS"),
            ("dns_servers = \"not-an-address\"", "HERALD_DNS_SERVERS"),
            ("egress_proxy = \"socks5://x:1\"", "HERALD_EGRESS_PROXY"),
            (
                "secret_rotation_grace = \"8d\"",
                "HERALD_SECRET_ROTATION_GRACE",
            ),
            ("master_key = \"c2hvcnQ=\"", "HERALD_MASTER_KEY"),
            (
                "previous_master_key = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"",
                "HERALD_PREVIOUS_MASTER_KEY",
            ),
        ] {
            let error = format!("{:#}", from_file(text).unwrap_err());
            assert!(error.contains(name), "{text}: {error}");
        }
    }
}
