//! Command-line interface: `moneta serve`, `moneta audit verify`.
