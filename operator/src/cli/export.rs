//! `dockop export kubernetes`: loads and validates like `dockop validate`, converts with
//! [`crate::export::kubernetes`], prints the manifests on stdout and the warnings on stderr.

use std::io::{Read, Write};
use std::process::ExitCode;

use super::KubernetesArgs;
use crate::export::kubernetes::{Input, Namespace, Options, Quantity, export};
use crate::spec::commands::print_diagnostics;
use crate::spec::load::load_with_positions;

/// Exit 0 when exported (warnings or not), 1 on invalid flags or input (nothing on stdout then).
pub fn kubernetes(args: &KubernetesArgs) -> ExitCode {
    let options = match options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let read = load_with_positions(&args.files, || {
        let mut text = String::new();
        std::io::stdin().lock().read_to_string(&mut text)?;
        Ok(text)
    });
    if !print_diagnostics(&read.loaded) {
        return ExitCode::FAILURE;
    }
    let inputs: Vec<Input<'_>> = read
        .loaded
        .objects
        .iter()
        .zip(&read.positions)
        .map(|(o, p)| Input {
            object: &o.object,
            positions: p.as_ref(),
        })
        .collect();
    let exported = export(&inputs, &options);
    let yaml = match exported.to_yaml() {
        Ok(y) => y,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stderr = std::io::stderr().lock();
    for w in &exported.warnings {
        let _ = writeln!(stderr, "{w}");
    }
    if let Err(e) = std::io::stdout().lock().write_all(yaml.as_bytes()) {
        let _ = writeln!(stderr, "error: cannot write to stdout: {e}");
        return ExitCode::FAILURE;
    }
    let (n, docs, warnings) = (
        inputs.len(),
        exported.objects.len(),
        exported.warnings.len(),
    );
    let _ = writeln!(
        stderr,
        "exported {n} {} as {docs} Kubernetes {}{}",
        if n == 1 { "object" } else { "objects" },
        if docs == 1 { "document" } else { "documents" },
        match warnings {
            0 => String::new(),
            1 => " (1 warning)".to_owned(),
            w => format!(" ({w} warnings)"),
        }
    );
    ExitCode::SUCCESS
}

fn options(args: &KubernetesArgs) -> Result<Options, crate::export::kubernetes::ExportError> {
    Ok(Options {
        namespace: args
            .namespace
            .as_deref()
            .map(Namespace::parse)
            .transpose()?,
        volume_size: Quantity::parse(&args.volume_size)?,
    })
}
