/// One problem in a configuration: which key, what is wrong with it, and how to fix it.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The dotted key path, e.g. `table[2].owners.vessel`.
    public var key: String
    public var problem: String
    public var fix: String

    public init(key: String, problem: String, fix: String) {
        self.key = key
        self.problem = problem
        self.fix = fix
    }

    public var description: String { "\(key): \(problem). Fix: \(fix)" }
}

/// Every problem found in one configuration file; nothing is used until there are none.
public struct ConfigurationErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [ConfigurationError]
    public init(_ errors: [ConfigurationError]) { self.errors = errors }

    public var description: String {
        let lines = errors.map { "  - \($0.description)" }.joined(separator: "\n")
        return "configuration is invalid (\(errors.count) problem\(errors.count == 1 ? "" : "s")):\n\(lines)"
    }
}
