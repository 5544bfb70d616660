import PostgresNIO

/// A failure talking to PostgreSQL, with the server's own words kept for the operator.
public struct DatabaseError: Error, Sendable, CustomStringConvertible {
    /// What FleetSync was doing, e.g. "installing capture on seafarer".
    public var context: String
    public var sqlState: String?
    public var message: String
    public var detail: String?
    public var hint: String?
    public var constraint: String?
    public var table: String?
    public var column: String?

    public init(context: String, sqlState: String? = nil, message: String, detail: String? = nil, hint: String? = nil, constraint: String? = nil, table: String? = nil, column: String? = nil) {
        self.context = context
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
        self.constraint = constraint
        self.table = table
        self.column = column
    }

    /// Wraps any error thrown by PostgresNIO, unwrapping the server's fields when there are some.
    public init(_ error: any Error, context: String) {
        if let existing = error as? DatabaseError {
            self = existing
            self.context = context + ": " + existing.context
            return
        }
        guard let psql = error as? PSQLError else {
            self.init(context: context, message: "\(error)")
            return
        }
        if let info = psql.serverInfo {
            self.init(
                context: context, sqlState: info[.sqlState], message: info[.message] ?? "unknown server error",
                detail: info[.detail], hint: info[.hint], constraint: info[.constraintName],
                table: info[.tableName], column: info[.columnName])
        } else {
            let underlying = psql.underlying.map { " (\($0))" } ?? ""
            self.init(context: context, message: "\(psql.code)\(underlying)")
        }
    }

    public var description: String {
        var text = "\(context): \(message)"
        if let sqlState { text += " [SQLSTATE \(sqlState)]" }
        if let detail { text += "\n  detail: \(detail)" }
        if let hint { text += "\n  hint: \(hint)" }
        return text
    }
}
