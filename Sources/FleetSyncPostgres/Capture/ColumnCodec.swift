import FleetSyncCore

/// How a column's value is written into captured JSONB and read back, so that every value comes
/// back exactly.
///
/// Most types round-trip through `to_jsonb` and `jsonb_populate_record` as they are. `json` and
/// `jsonb` do not: a JSON `null` inside the column and an SQL NULL would both become `null`. Their
/// values are therefore wrapped in a one-element array (`[value]`), and SQL NULL stays `null`.
public enum ColumnCodec {
    static func isJSON(_ type: String) -> Bool { type == "jsonb" || type == "json" }

    /// The SQL expression that captures `NEW.column` (or any row alias) as JSONB.
    public static func captureExpression(_ column: PhysicalColumn, row: String = "NEW") -> String {
        let value = "\(row).\(SQL.identifier(column.name))"
        if isJSON(column.type) {
            return "CASE WHEN \(value) IS NULL THEN NULL ELSE jsonb_build_array(\(value)) END"
        }
        return value
    }

    /// The SQL expression that reads the column back from a record produced by
    /// `jsonb_populate_record(set)` with alias `record`.
    public static func applyExpression(_ column: PhysicalColumn, record: String) -> String {
        let value = "\(record).\(SQL.identifier(column.name))"
        if isJSON(column.type) { return "(\(value)) -> 0" }
        return value
    }
}
