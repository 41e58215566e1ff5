//! The methods' parameters as command-line flags, generated from the method registry: one `--KEY` per parameter
//! (and its aliases), whose help names the methods that read it, its default and its range. A new method's
//! parameters reach every command that explains (`attribute`, `selectivity`, `metrics`, `roar`, `kar`) without a
//! line here.

use clap::builder::PossibleValuesParser;
use clap::error::ErrorKind;
use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use whitebox_core::attribution::registry::{self, ParamKind, ParamSpec};
use whitebox_core::attribution::{Method, Params};

/// The values given on the command line (a parameter not given takes its method's default).
#[derive(Clone, Debug, Default)]
pub struct MethodParams(pub Params);

/// A parameter's argument id: its key (no command has a field of a parameter's name; `augment_args` checks).
fn arg_id(spec: &ParamSpec) -> &'static str {
    spec.key
}

fn help(spec: &ParamSpec) -> String {
    let users: Vec<&str> = Method::all().iter().filter(|m| m.uses(spec)).map(|m| m.label()).collect();
    let default = match &spec.kind {
        ParamKind::Count { default, min, max } => format!("{default}, within {min}..={max}"),
        ParamKind::Real { default, min, max } => format!("{default}, within [{min}, {max}]"),
        ParamKind::Choice { default, .. } => default.to_string(),
        ParamKind::Layer => "the model's own choice".into(),
    };
    format!("{} [methods: {}; default: {default}]", spec.help, users.join(", "))
}

impl Args for MethodParams {
    fn augment_args(mut cmd: Command) -> Command {
        for spec in registry::params() {
            let taken = |name: &str| cmd.get_arguments().any(|a| a.get_long() == Some(name) || a.get_id() == name);
            if taken(spec.key) {
                continue; // the command's own flag of that name wins (`selectivity --steps`)
            }
            let mut arg = Arg::new(arg_id(spec)).long(spec.key).help(help(spec)).allow_negative_numbers(true);
            for &alias in spec.aliases.iter().filter(|a| !taken(a)) {
                arg = arg.visible_alias(alias);
            }
            arg = match &spec.kind {
                ParamKind::Choice { values, .. } => arg.value_parser(PossibleValuesParser::new(values.iter())),
                ParamKind::Count { .. } | ParamKind::Layer => arg.value_name("N"),
                ParamKind::Real { .. } => arg.value_name("X"),
            };
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for MethodParams {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut out = MethodParams::default();
        out.update_from_arg_matches(m)?;
        Ok(out)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        for spec in registry::params() {
            let id = arg_id(spec);
            let given = m.try_get_one::<String>(id).ok().flatten();
            if let Some(text) = given {
                self.0
                    .set(spec.key, text)
                    .map_err(|e| clap::Error::raw(ErrorKind::ValueValidation, format!("{e}\n")))?;
            }
        }
        Ok(())
    }
}
