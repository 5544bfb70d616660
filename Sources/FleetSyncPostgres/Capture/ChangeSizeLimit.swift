/// The largest change a node lets its writers make (`[limits] max_change_bytes`): a check on the
/// capture log, so that a write whose captured values could never be delivered is refused in
/// the writing transaction instead of accepted and stuck. The size is the stored size of the
/// change's values (`pg_column_size` of the JSONB), which costs the capture nothing measurable,
/// unlike serializing it. Relayed and transfer events on the shore pass the same check.
public enum ChangeSizeLimit {
    /// The constraint's name is the error's headline: PostgreSQL prints it in the message.
    public static let constraintName = "fleetsync: a change larger than [limits] max_change_bytes"

    /// Statements that (re)install the check for `bytes`.
    public static func statements(maximumBytes bytes: Int) -> [String] {
        let name = SQL.identifier(constraintName)
        return [
            "ALTER TABLE fleetsync.capture_log DROP CONSTRAINT IF EXISTS \(name)",
            "ALTER TABLE fleetsync.capture_log ADD CONSTRAINT \(name) CHECK (pg_column_size(delta) <= \(bytes)) NOT VALID",
        ]
    }
}
