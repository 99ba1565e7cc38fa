//! `mongoshift init`: writes a commented migration.toml that passes `validate`.

use std::io::Write;

use mongodb::options::ConnectionString;
use mongoshift::cluster;
use mongoshift::config::template;
use mongoshift::exit;
use mongoshift::redact::Redactor;

use crate::cli::args::{Cli, InitArgs};
use crate::cli::output::Output;

/// Writes the file, refusing to overwrite one without `--force`.
pub fn run(cli: &Cli, args: &InitArgs, out: &Output) -> u8 {
    for (flag, uri) in [
        ("--source", &args.source),
        ("--destination", &args.destination),
    ] {
        if let Some(uri) = uri
            && let Err(e) = ConnectionString::parse(uri)
        {
            let message = Redactor::for_uris([uri.as_str()]).redact(&cluster::driver_message(&e));
            out.error(&format!(
                "{flag} is not a valid connection string: {message}"
            ));
            return exit::ERROR;
        }
    }
    let path = &cli.config;
    let generated = template(args.source.as_deref(), args.destination.as_deref());
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        // create_new: refuse atomically, even if another process creates the file meanwhile.
        options.create_new(true);
    }
    let result = options.open(path).and_then(|mut f| {
        f.write_all(generated.text.as_bytes())
            .and_then(|()| f.sync_all())
    });
    match result {
        Ok(()) => {
            out.out_line(&format!("wrote {}", path.display()));
            for note in &generated.notes {
                out.out_line(&format!("note: {note}"));
            }
            out.out_line("next: edit it, then run `mongoshift validate` and `mongoshift plan`");
            exit::SUCCESS
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            out.error(&format!(
                "{} already exists; pass --force to overwrite it",
                path.display()
            ));
            exit::ERROR
        }
        Err(e) => {
            out.error(&format!("cannot write {}: {e}", path.display()));
            exit::ERROR
        }
    }
}
