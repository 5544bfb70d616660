import FleetSyncPostgres
import PostgresNIO

/// The statements every exchange runs, prepared once per pooled connection (PostgresNIO keeps
/// them by name): an exchange then sends only their parameters, and PostgreSQL neither parses
/// them again nor, once it settles on a generic plan for these key lookups, plans them again (in
/// the fleet-load benchmark, planning was about half of their time). The queue read is not
/// among them: its plan is kept custom on purpose (``VesselQueue``). Each names the types of its
/// parameters: inferred from the first call's values, a parameter that call left null would be
/// typed from the SQL around it (an integer, say, for a bigint) and refuse later values.
protocol ExchangeStatement: PostgresPreparedStatement where Row == PostgresRow {
    var bindings: PostgresBindings { get }
    init(bindings: PostgresBindings)
}

extension ExchangeStatement {
    func makeBindings() -> PostgresBindings { bindings }
    func decodeRow(_ row: PostgresRow) throws -> PostgresRow { row }
}

extension DatabaseSession {
    /// Runs a prepared exchange statement with `binds` and returns its rows.
    func rows<S: ExchangeStatement>(_ statement: S.Type, _ binds: PostgresBindings, context: @autoclosure () -> String) async throws(DatabaseError) -> [PostgresRow] {
        let logger = self.logger
        return try await answered(context()) { connection in
            var rows: [PostgresRow] = []
            for try await row in try await connection.execute(S(bindings: binds), logger: logger) { rows.append(row) }
            return rows
        }
    }
}

/// ``ShoreAuthority/standingSQL``.
struct StandingStatement: ExchangeStatement {
    static let sql = ShoreAuthority.standingSQL
    static let bindingDataTypes: [PostgresDataType] = [.text, .uuid, .int8, .bytea, .text]
    var bindings: PostgresBindings
}

/// ``ExchangeStart/sql``.
struct ExchangeStartStatement: ExchangeStatement {
    static let sql = ExchangeStart.sql
    static let bindingDataTypes: [PostgresDataType] = [.text, .int8, .int8, .text, .bool, .int8]
    var bindings: PostgresBindings
}

/// ``ExchangeStart/contactSQL``.
struct ContactStatement: ExchangeStatement {
    static let sql = ExchangeStart.contactSQL
    static let bindingDataTypes: [PostgresDataType] = [.text, .int8, .text, .int8Array]
    var bindings: PostgresBindings
}

/// The release of a vessel's exchange lock (``ShoreExchange/holding(_:on:_:)``).
struct UnlockStatement: ExchangeStatement {
    static let sql = "SELECT pg_advisory_unlock(hashtext($1))"
    static let bindingDataTypes: [PostgresDataType] = [.text]
    var bindings: PostgresBindings
}
