/// Quoting for the few places where SQL text is built: identifiers from the catalog or the
/// validated configuration, and constants baked into generated trigger functions.
/// Values at run time are always bound as parameters instead.
public enum SQL {
    /// `name` as a quoted identifier: `"a""b"`.
    public static func identifier(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// `schema.name`, both quoted.
    public static func qualified(_ schema: String, _ name: String) -> String {
        identifier(schema) + "." + identifier(name)
    }

    /// A standard-conforming string literal: `'it''s'`.
    public static func literal(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
    }

    /// A dollar-quote tag that does not occur in `body`.
    public static func dollarTag(for body: String) -> String {
        var n = 0
        while true {
            let tag = n == 0 ? "$fleetsync$" : "$fleetsync\(n)$"
            if !body.contains(tag) { return tag }
            n += 1
        }
    }
}
