import FleetSyncCore

/// How a column's value is written into captured JSONB and read back, so that every value comes
/// back exactly.
///
/// Most types round-trip through `to_jsonb` and `jsonb_populate_record` as they are. `json` and
/// `jsonb` do not: a JSON `null` inside the column and an SQL NULL would both become `null`. Their
/// values are therefore wrapped in a one-element array (`[value]`), and SQL NULL stays `null`.
/// The text of floating-point and interval values depends on session settings
/// (`extra_float_digits`, `IntervalStyle`); when the writing session's settings would lose
/// digits or change the text, the value is converted by `fleetsync.pinned_jsonb`, which fixes them.
public enum ColumnCodec {
    static func isJSON(_ type: String) -> Bool { type == "jsonb" || type == "json" }
    static func isJSONArray(_ type: String) -> Bool { type.hasSuffix("[]") && isJSON(String(type.prefix { $0 != "[" })) }

    /// The session setting whose value changes the column's captured text, with the condition
    /// under which the session's own value is safe; nil when no setting matters.
    static func settingGuard(_ type: String) -> String? {
        var base = Substring(type.lowercased())
        while base.hasSuffix("[]") { base = base.dropLast(2) }
        if base == "double precision" || base == "real" {
            return "current_setting('extra_float_digits')::integer > 0"
        }
        if base == "interval" || base.hasPrefix("interval(") || base.hasPrefix("interval ") {
            return "current_setting('intervalstyle') = 'postgres'"
        }
        return nil
    }

    /// Types whose `=` is missing (json, xml, point, polygon, path) or is not identity (box, lseg,
    /// line and circle compare areas or lengths): their changes are found by comparing text.
    static let withoutIdentityEquality: Set<Substring> = ["json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle"]

    /// The SQL condition "the column changed between `old` and `new`" (rows of a trigger): `IS
    /// DISTINCT FROM`, on the values' text for types without an identity `=` (and arrays of
    /// them), where comparing the values themselves fails or misses changes.
    public static func changed(_ column: PhysicalColumn, new: String = "NEW", old: String = "OLD") -> String {
        let id = SQL.identifier(column.name)
        var base = Substring(column.type.lowercased())
        while base.hasSuffix("[]") { base = base.dropLast(2) }
        if withoutIdentityEquality.contains(base) {
            return "\(new).\(id)::text IS DISTINCT FROM \(old).\(id)::text"
        }
        return "\(new).\(id) IS DISTINCT FROM \(old).\(id)"
    }

    /// The SQL expression that captures `NEW.column` (or any row alias) as JSONB.
    public static func captureExpression(_ column: PhysicalColumn, row: String = "NEW") -> String {
        let value = "\(row).\(SQL.identifier(column.name))"
        if isJSON(column.type) {
            return "CASE WHEN \(value) IS NULL THEN NULL ELSE jsonb_build_array(\(value)) END"
        }
        if isJSONArray(column.type) {
            // An array of JSON values as JSON would be read back as a multi-dimensional array
            // (`ARRAY['[]'::json]` → `[[]]` → "malformed array literal"): its text instead, which
            // jsonb_populate_record reads through the array's input function.
            return "to_jsonb(\(value)::text)"
        }
        if let safe = settingGuard(column.type) {
            return "CASE WHEN \(safe) THEN to_jsonb(\(value)) ELSE fleetsync.pinned_jsonb(\(value)) END"
        }
        return value
    }

    /// Every one of `columns` of the row `row` as one JSONB object in the capture encoding.
    public static func captureObject(_ columns: [PhysicalColumn], row: String = "NEW") -> String {
        SQL.jsonObject(columns.map { "\(SQL.literal($0.name)), \(captureExpression($0, row: row))" })
    }

    /// The SQL expression that reads the column back from a record produced by
    /// `jsonb_populate_record(set)` with alias `record`.
    public static func applyExpression(_ column: PhysicalColumn, record: String) -> String {
        let value = "\(record).\(SQL.identifier(column.name))"
        if isJSON(column.type) { return "(\(value)) -> 0" }
        return value
    }
}
