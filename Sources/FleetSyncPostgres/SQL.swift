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

    /// A JSONB object from `key, value` argument pairs. `jsonb_build_object` takes at most 100
    /// arguments; longer lists are built in chunks and concatenated.
    public static func jsonObject(_ pairs: [String]) -> String {
        if pairs.isEmpty { return "'{}'::jsonb" }
        return stride(from: 0, to: pairs.count, by: 45).map {
            "jsonb_build_object(" + pairs[$0..<min($0 + 45, pairs.count)].joined(separator: ", ") + ")"
        }.joined(separator: " || ")
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
