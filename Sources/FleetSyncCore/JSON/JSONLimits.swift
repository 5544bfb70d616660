/// The bounds on one JSON value that every parser and decoder of FleetSync applies, counted the
/// same way everywhere: ``JSONParser`` (stored changes, dead letters, the quarantine), the wire
/// decoder (`WireCodec.decodeValue`) and its skimmer (`WireCodec.skipValue`).
///
/// The principle (docs/ARCHITECTURE.md): whatever PostgreSQL accepts into a synced column must
/// reach every node, so each bound is at least what PostgreSQL 15 accepts for the column's type.
/// A value past a bound is refused where it enters (the wire), and an event holding one that a
/// node finds in its own outbox or quarantine (possible only if an operator raised PostgreSQL's
/// `max_stack_depth`) is dead-lettered with telemetry instead of stopping the stream.
public enum JSONLimits {
    /// The longest number text, in bytes: the longest text of a PostgreSQL `numeric`, which is
    /// also the type of every `jsonb` number. PostgreSQL writes a numeric without exponent, with at
    /// most 131,072 digits before the decimal point and 16,383 after it: a sign, 131,072 digits,
    /// the point and 16,383 digits make 147,457 characters. (The previous bound, 1,024, refused
    /// `1e1100` and stopped the vessel that held it.)
    public static let maximumNumberBytes = 1 + 131_072 + 1 + 16_383

    /// The deepest nesting of arrays and objects in one value: a scalar is at depth 0, `[]` and
    /// `{}` at depth 1, `[[1]]` at depth 2. PostgreSQL 15 at its default `max_stack_depth` (2 MB)
    /// refuses `jsonb` nested about 15,000 levels deep (14,000 levels of `[` are accepted, 15,000
    /// are not; objects fewer), so every value PostgreSQL accepts by default is within this bound,
    /// including the one level a `json`/`jsonb` value gains as it travels (wrapped in a
    /// one-element array, see `ColumnCodec`).
    ///
    /// The parsers, decoders and serializers are iterative and compare values iteratively, so
    /// depth costs them no stack. Destroying a value still recurses (Swift releases an enum's
    /// arrays recursively): about 200 bytes of stack per level, about 3.3 MB at this depth, which
    /// fits the 8 MB stacks of Swift's concurrency threads and of the main thread on Linux.
    public static let maximumDepth = 16_384

    /// The depth at which the values of a stored document sit: a document whose values are the
    /// members of its top object (an outbox delta, quarantined fields) has them at depth 1; an
    /// event's JSON form (``ChangeEvent/json``) has them at depth 3 (`{"fields": {"c": {"v": …}}}`).
    /// ``JSONParser/parse(_:valuesAt:)`` accepts a document exactly as deep as its values may be.
    public enum Envelope {
        public static let value = 0
        public static let members = 1
        public static let event = 3
    }
}
