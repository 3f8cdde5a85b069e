//! Tests of the screening pipeline against the sample list (`assets/sdn_sample.csv`).
use super::ScreeningStatus::*;
use super::*;

type Dob = Option<(i32, u32, u32)>;

fn list() -> SanctionsList {
    SanctionsList::parse(include_str!("../../../assets/sdn_sample.csv")).expect("sample parses")
}

const POSITIVES: &[(&str, (i32, u32, u32), &str)] = &[
    ("Dmitry Kovalenko", (1968, 3, 14), "9001"),
    ("Dmytro Ivanovich Kovalenko", (1968, 3, 14), "9001"),
    ("Дмитро Коваленко", (1968, 3, 14), "9001"),
    ("khaled al rasheedi", (1975, 1, 2), "9002"),
    ("Khalid Alrashidi", (1975, 1, 2), "9002"),
    ("Khalid Al-Rashidi", (1975, 1, 2), "9002"),
    ("Juergen Mueller-Brandt", (1958, 12, 8), "9009"),
    ("Jurgen Muller Brandt", (1958, 12, 8), "9009"),
    ("Anatolii Petrovskiy", (1961, 9, 30), "9003"),
    ("Anatoly Sergeevich Petrovsky", (1961, 9, 30), "9003"),
    ("Mahmud Reza Husseini", (1966, 2, 17), "9008"),
    ("Song Chol Kim", (1980, 11, 19), "9012"),
    ("Luis Fernando Mendez Ortega", (1979, 7, 11), "9004"),
    ("LUIS MÉNDEZ ORTEGA", (1979, 7, 11), "9004"),
    ("Rosa Valdivia", (1972, 4, 23), "9010"),
    ("Chidi Okonkwo", (1970, 5, 5), "9007"),
    ("Wei Zhang", (1983, 8, 21), "9006"),
];

#[test]
fn spelling_variants_with_right_dob_match() {
    let l = list();
    for &(name, dob, ent) in POSITIVES {
        let r = l.screen(name, Some(dob));
        assert_eq!((r.status, r.matched_entry.as_deref()), (Match, Some(ent)), "{name}: {r:?}");
        assert!(r.best_score >= MATCH_THRESHOLD && r.matched_name.is_some(), "{name}: {r:?}");
    }
}

#[test]
fn unknown_or_same_year_dob_is_potential_and_other_year_is_not_match() {
    let l = list();
    for &(name, (y, m, d), ent) in POSITIVES {
        for dob in [None, Some((y, m, if d == 1 { 2 } else { 1 }))] {
            let r = l.screen(name, dob);
            assert_eq!((r.status, r.matched_entry.as_deref()), (PotentialMatch, Some(ent)), "{name} {dob:?}: {r:?}");
        }
        assert_ne!(l.screen(name, Some((y + 7, m, d))).status, Match, "{name} wrong year");
    }
    // Only a normalised-identical name survives a clearly different DOB year, as a review item.
    assert_eq!(l.screen("Dmitro Ivanovych Kovalenko", Some((1990, 1, 1))).status, PotentialMatch);
    assert_eq!(l.screen("Dmitry Kovalenko", Some((1990, 1, 1))).status, Clear);
}

#[test]
fn near_misses_stay_clear() {
    let l = list();
    let cases: &[(&str, Dob)] = &[
        ("Dmitri Kovalev", Some((1968, 3, 14))),
        ("Anna Kovalenko", Some((1990, 5, 1))),
        ("Anna Kovalenko", Some((1968, 3, 14))),
        ("Khalid Omar", Some((1975, 1, 2))),
        ("Wei Zhang", Some((1990, 1, 1))),
        ("Kim Song", Some((1980, 1, 1))),
        ("Rosa Valdez", Some((1972, 4, 23))),
        ("Luis Ortega", Some((1985, 3, 3))),
        ("Ada Lovelace", Some((1990, 12, 10))),
        ("John Smith", Some((1970, 5, 5))),
        ("Kovalenko", Some((1968, 3, 14))),
        ("Wei", None),
        ("", None),
        ("!!! ---", Some((1968, 3, 14))),
    ];
    for &(name, dob) in cases {
        let r = l.screen(name, dob);
        assert_eq!((r.status, r.matched_entry.as_deref()), (Clear, None), "{name} {dob:?}: {r:?}");
    }
}

#[test]
fn partial_names_and_entities_go_to_review_at_most() {
    let l = list();
    // Part of a compound surname missing: review only when the DOB agrees, never Match.
    assert_eq!(l.screen("Juergen Mueller", Some((1958, 12, 8))).status, PotentialMatch);
    assert_eq!(l.screen("Juergen Mueller", None).status, Clear);
    assert_eq!(l.screen("Luis Mendez", Some((1979, 7, 11))).status, PotentialMatch);
    // Too few matched letters for a partial name: review with the exact DOB, not Match.
    assert_eq!(l.screen("Kim Song", Some((1980, 11, 19))).status, PotentialMatch);
    // A listed entity typed as a person's name: review whatever the DOB.
    for dob in [None, Some((1980, 1, 1))] {
        let r = l.screen("Northwind Shipping Ltd", dob);
        assert_eq!((r.status, r.matched_entry.as_deref()), (PotentialMatch, Some("9005")));
    }
    assert_eq!(l.screen("Northwind Trading", None).status, Clear);
}

#[test]
fn insensitive_to_case_punctuation_whitespace_and_order() {
    let l = list();
    for &(name, dob, _) in POSITIVES {
        let base = l.screen(name, Some(dob));
        let spaced = format!("  {}\t ", name.replace(' ', "   "));
        let punct = format!("{}.", name.replace(' ', ". - "));
        for v in [name.to_lowercase(), name.to_uppercase(), spaced, punct] {
            assert_eq!(l.screen(&v, Some(dob)), base, "{name} vs {v}");
        }
    }
    let dob = Some((1968, 3, 14));
    assert_eq!(l.screen("KOVALENKO, Dmitry", dob), l.screen("Dmitry Kovalenko", dob));
    assert_eq!(l.screen("Al Rashidi Khalid", Some((1975, 1, 2))).status, Match);
    assert_eq!(l.screen("Juergen Muellerbrandt", Some((1958, 12, 8))).status, Match);
}

#[test]
fn normalisation() {
    assert_eq!(normalise_name("AL-RASHIDI, Khalid"), ["alrashidi", "khalid"]);
    assert_eq!(normalise_name("Mr. Jürgen  MÜLLER-Brandt"), ["jurgen", "muller", "brandt"]);
    assert_eq!(normalise_name("Straße Ørsted O'Brien"), ["strasse", "orsted", "obrien"]);
    assert_eq!(normalise_name("Ludwig van Beethoven"), ["ludwig", "beethoven"]);
    assert_eq!(normalise_name("Mu\u{308}ller Щукин"), ["muller", "shchukin"]);
    assert_eq!(normalise_name("Сергеевич"), ["sergeevich"]);
    let pairs = [
        ("sergeyevich", "sergeevich"),
        ("mueller", "muller"),
        ("anatolii", "anatoly"),
        ("mahmoud", "mahmud"),
    ];
    assert!(pairs.iter().all(|(a, b)| fold_token(a) == fold_token(b)));
}

const PAD: &str = r#""-0- ","-0- ","-0- ","-0- ","-0- ","-0- ","-0- ""#;

#[test]
fn parses_sample_and_edge_cases() {
    let l = list();
    let e = &l.entries()[1];
    assert_eq!((l.len(), l.is_empty(), e.ent_num.as_str()), (12, false, "9002"));
    assert_eq!((e.sdn_type.as_str(), e.program.as_str()), ("individual", "SDGT"));
    assert_eq!(
        (e.name.as_str(), &e.aliases[..]),
        ("AL-RASHIDI, Khalid Omar", &["AL RASHEEDI, Khaled".into()][..])
    );
    assert_eq!(e.dobs, [DobSpec::Exact { year: 1975, month: 1, day: 2 }]);
    assert_eq!(l.entries()[8].name, "MÜLLER-BRANDT, Jürgen");
    assert!(l.entries()[4].dobs.is_empty() && l.entries()[4].aliases.is_empty());

    let remarks = "DOB 1968; alt. DOB circa 1970; DOB 1971 to 1969; a.k.a. 'DOE, Johnny'; f.k.a. 'O'BRIEN, Sean'; n.k.a. 'X, Y'.";
    let csv = format!(
        "\u{feff}1,\"DOE, John \"\"Jack\"\", Jr\",\"individual\",\"SDGT\",{PAD},\"{remarks}\"\r\n\r\n  \n\
         2,\"ACME, INC.\",\"-0- \",\"IRAN\",{PAD},\"DOB 01 Feb 1970; DOB 30 Feb 1971; DOB Mar 1972; DOB unknown\"\r\n\x1a"
    );
    let l = SanctionsList::parse(&csv).unwrap();
    let (a, b) = (&l.entries()[0], &l.entries()[1]);
    assert_eq!((l.len(), a.name.as_str()), (2, "DOE, John \"Jack\", Jr"));
    assert_eq!(a.aliases, ["DOE, Johnny", "O'BRIEN, Sean", "X, Y"]);
    assert_eq!(a.dobs, [DobSpec::Year(1968), DobSpec::YearRange(1969, 1971), DobSpec::YearRange(1969, 1971)]);
    assert_eq!((b.name.as_str(), b.sdn_type.as_str()), ("ACME, INC.", ""));
    let feb = DobSpec::Exact { year: 1970, month: 2, day: 1 };
    assert_eq!(b.dobs, [feb, DobSpec::Year(1971), DobSpec::Year(1972)]);
    // Year-level DOBs agree on the year; aliases are screened too.
    assert_eq!(l.screen("Johnny Doe", Some((1970, 6, 6))).status, Match);
    assert_eq!(l.screen("Sean O'Brien", Some((1968, 1, 1))).status, Match);
    assert_eq!(l.screen("Sean OBrien", Some((1980, 1, 1))).status, PotentialMatch); // identical name, other year
    assert_eq!(l.screen("Sean Obrian", Some((1980, 1, 1))).status, Clear);
    let eof_on_last_line = format!("7,\"A, B\",\"individual\",\"P\",{PAD},\"\"\x1a");
    assert_eq!(SanctionsList::parse(&eof_on_last_line).map(|l| l.len()), Ok(1));
}

#[test]
fn malformed_lines_are_errors_naming_the_line() {
    let good = format!("1,\"A, B\",\"individual\",\"P\",{PAD},\"-0- \"");
    let cases = [
        (format!("{good}\n\n2,\"C, D\",\"individual\"\n"), 3, "expected 12 columns, found 3"),
        (format!("{good},\"extra\""), 1, "expected 12 columns, found 13"),
        (
            format!("{good}\r\n2,\"C, D,\"individual\",\"P\",{PAD}\r\n"),
            2,
            "text after closing quote (column 2)",
        ),
        (format!("{good}\n2,\"unterminated"), 2, "unterminated quoted field (column 2)"),
        ("1,ab\"c".to_string(), 1, "stray quote in unquoted field (column 2)"),
        (format!("{good}\n{good}"), 2, "duplicate ent_num 1"),
        (format!("x{good}"), 1, "ent_num \"x1\" is not numeric"),
        (good.replace("\"A, B\"", "\" \""), 1, "empty SDN name"),
    ];
    for (csv, line, reason) in cases {
        let expected = ListError::Line { line, reason: reason.into() };
        assert_eq!(SanctionsList::parse(&csv).unwrap_err(), expected, "{csv:?}");
    }
    assert_eq!(SanctionsList::parse("\r\n\x1a").unwrap_err(), ListError::Empty);
    assert_eq!(SanctionsList::parse("").unwrap_err(), ListError::Empty);
}

#[test]
fn status_uses_snake_case_names() {
    use serde::de::{value::Error, value::StrDeserializer, Deserialize};
    let parse = |s: &str| ScreeningStatus::deserialize(StrDeserializer::<Error>::new(s));
    let parsed = [parse("potential_match"), parse("clear"), parse("match")];
    assert_eq!(parsed, [Ok(PotentialMatch), Ok(Clear), Ok(Match)]);
    assert!(parse("PotentialMatch").is_err());
}

#[test]
fn given_names_joined_or_split_match_each_other() {
    let l = list();
    // Listed as "ZHANG, Wei Ming" (DOB 21 Aug 1983).
    for name in ["Weiming Zhang", "Zhang Weiming", "Wei-Ming Zhang", "Wei Ming Zhang", "ZHANG Wei Ming"] {
        let r = l.screen(name, Some((1983, 8, 21)));
        assert_eq!((r.status, r.matched_entry.as_deref()), (Match, Some("9006")), "{name}: {r:?}");
    }
    // Listed with the given names joined, screened split.
    let csv = format!("1,\"ZHANG, Weiming\",\"individual\",\"P\",{PAD},\"DOB 21 Aug 1983\"");
    let joined = SanctionsList::parse(&csv).unwrap();
    for name in ["Wei Ming Zhang", "Zhang Wei Ming", "Weiming Zhang"] {
        assert_eq!(joined.screen(name, Some((1983, 8, 21))).status, Match, "{name}");
    }
    // Joining does not make near misses match.
    assert_ne!(l.screen("Weiming Zhang", Some((1990, 1, 1))).status, Match);
    assert_eq!(l.screen("Ming Zhao", Some((1983, 8, 21))).status, Clear);
}

#[test]
fn other_scripts_are_transliterated_or_sent_to_review() {
    let l = list();
    // Chinese: transliterated (a word per character) and matched.
    let r = l.screen("张伟明", Some((1983, 8, 21)));
    assert_eq!((r.status, r.matched_entry.as_deref()), (Match, Some("9006")), "{r:?}");
    // Arabic (written without vowels, so no reliable match): never clear while a listed person
    // has the same date of birth — a compliance officer decides.
    let r = l.screen("خالد الرشيدي", Some((1975, 1, 2)));
    assert_eq!((r.status, r.matched_entry.as_deref()), (PotentialMatch, Some("9002")), "{r:?}");
    // Another birthday, or no listed person born that day: clear.
    assert_eq!(l.screen("خالد الرشيدي", Some((1990, 6, 6))).status, Clear);
    assert_eq!(l.screen("王芳", Some((1990, 6, 6))).status, Clear);
    // Latin and Cyrillic names keep the plain rules (no review for a shared birthday alone).
    assert_eq!(l.screen("Ada Lovelace", Some((1975, 1, 2))).status, Clear);
    assert_eq!(l.screen("Анна Петрова", Some((1975, 1, 2))).status, Clear);
}
