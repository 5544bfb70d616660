import Foundation
import Logging
import PostgresNIO

/// Where to connect, parsed from a `postgres://user:password@host:port/database` URL.
public struct PostgresEndpoint: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String

    public init(host: String, port: Int, user: String, password: String? = nil, database: String) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
    }

    /// Parses a database URL; the error says which part is wrong.
    public init(url: String) throws(DatabaseError) {
        guard let components = URLComponents(string: url), let scheme = components.scheme,
              scheme == "postgres" || scheme == "postgresql" else {
            throw DatabaseError(context: "database.url", message: "not a postgres:// URL", hint: "write postgres://USER:PASSWORD@HOST:PORT/DATABASE")
        }
        guard let host = components.host, !host.isEmpty else {
            throw DatabaseError(context: "database.url", message: "the URL names no host", hint: "write postgres://USER@HOST:PORT/DATABASE")
        }
        let database = String(components.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty else {
            throw DatabaseError(context: "database.url", message: "the URL names no database", hint: "end the URL with /DATABASE")
        }
        self.init(
            host: host, port: components.port ?? 5432, user: components.user ?? "postgres",
            password: components.password, database: database)
    }

    var configuration: PostgresConnection.Configuration {
        var configuration = PostgresConnection.Configuration(host: host, port: port, username: user, password: password, database: database, tls: .disable)
        configuration.options.additionalStartupParameters = Self.sessionSettings
        return configuration
    }

    /// Settings of every FleetSync connection. JIT off: the sequencer's statement, planned with
    /// the estimates of tables whose statistics are stale (a one-row counter taken for 1,540
    /// rows), passed every JIT threshold and was compiled by LLVM on each call, 200-500 ms for
    /// a few thousand events, most of the shore's database time in the side-by-side benchmark
    /// (docs/BENCHMARKS.md). No statement FleetSync runs gains from JIT.
    ///
    /// `random_page_cost` 1.1 (PostgreSQL's default, 4, models spinning disks): with it, the
    /// applier's read of a batch's 1,000 target rows (`id = ANY($1)`) in a 100,000-row table was
    /// planned as a sequential scan of the whole table, 29-54 ms, against 2-3 ms through the
    /// primary key, the largest part of the receiver's time per batch (docs/BENCHMARKS.md). Only
    /// FleetSync's own sessions use it; FleetSync reads by key.
    public static let sessionSettings: [(String, String)] = [("jit", "off"), ("random_page_cost", "1.1")]
}

/// One open connection and the few ways FleetSync uses it.
public final class DatabaseSession: Sendable {
    public let connection: PostgresConnection
    public let logger: Logger
    let watch: EndWatch

    private init(connection: PostgresConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
        self.watch = EndWatch.of(connection)
    }

    /// Opens a connection to `endpoint`.
    public static func connect(_ endpoint: PostgresEndpoint, logger: Logger) async throws(DatabaseError) -> DatabaseSession {
        do {
            let connection = try await PostgresConnection.connect(configuration: endpoint.configuration, id: 1, logger: logger)
            return DatabaseSession(connection: connection, logger: logger)
        } catch {
            throw DatabaseError(error, context: "connecting to \(endpoint.host):\(endpoint.port)/\(endpoint.database) as \(endpoint.user)")
        }
    }

    /// Opens a connection to the database at `url`.
    public static func connect(url: String, logger: Logger) async throws(DatabaseError) -> DatabaseSession {
        try await connect(PostgresEndpoint(url: url), logger: logger)
    }

    public func close() async {
        try? await connection.close()
    }

    /// Fails at once when the connection has ended (closed here, or by the server: a terminated
    /// backend, a restarted database). PostgresNIO (1.33) hands a statement on an ended
    /// connection to a channel whose handlers are gone, and nothing ever answers or fails it
    /// (postgres-nio #487, reverted by #501): the caller waited forever, a vessel daemon until its
    /// exchange's deadline (270 s by default) when its database terminated its backends
    /// mid-exchange: the statement after the one that failed (a ROLLBACK, the unlock, recording
    /// the failure) never returned. Every statement of a session checks first, and waits through
    /// ``answered(_:_:)``, which fails a statement sent in the instant the connection ended.
    public func requireOpen(_ context: @autoclosure () -> String) throws(DatabaseError) {
        guard connection.isClosed else { return }
        throw Self.ended(context())
    }

    private static func ended(_ context: String) -> DatabaseError {
        DatabaseError(context: context, message: "the connection to the database has ended (the server closed it, or it was lost)",
                      hint: "reconnect (the daemon does so by itself)")
    }

    /// Runs one use of ``connection`` (a statement and the reading of its rows, a COPY) and
    /// returns its result, failing with a clear error at once when the connection has ended, or
    /// within half a second when it ends while the statement waits for an answer that will never
    /// come (``EndWatch``). Every statement FleetSync sends goes through here.
    public func answered<T: Sendable>(_ context: @autoclosure () -> String, _ operation: @escaping @Sendable (PostgresConnection) async throws -> T) async throws(DatabaseError) -> T {
        let context = context()
        try requireOpen(context)
        let connection = self.connection
        do {
            return try await watch.run(ended: { Self.ended(context) }) { try await operation(connection) }
        } catch let error as DatabaseError {
            throw error
        } catch {
            throw DatabaseError(error, context: context)
        }
    }

    /// How many statements of this session wait for an answer now.
    var waitingStatements: Int { watch.waiting }

    /// Runs a statement, discarding any rows.
    public func execute(_ sql: String, _ binds: PostgresBindings = PostgresBindings(), context: @autoclosure () -> String = "running SQL") async throws(DatabaseError) {
        let logger = self.logger
        _ = try await answered(context()) { connection in
            _ = try await connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger).collect()
        }
    }

    /// Runs a query and returns all of its rows.
    public func rows(_ sql: String, _ binds: PostgresBindings = PostgresBindings(), context: @autoclosure () -> String = "running SQL") async throws(DatabaseError) -> [PostgresRow] {
        let logger = self.logger
        return try await answered(context()) { connection in
            try await connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger).collect()
        }
    }

    /// Runs `body` inside `BEGIN`/`COMMIT`; any error rolls everything back and is rethrown.
    public func transaction<T: Sendable>(_ body: (DatabaseSession) async throws -> T) async throws -> T {
        try await transaction(begin: "BEGIN", body)
    }

    /// A transaction whose snapshot is the first statement's and stays (repeatable read), read
    /// only: one round trip fewer than `BEGIN` and a `SET TRANSACTION`.
    public func snapshot<T: Sendable>(_ body: (DatabaseSession) async throws -> T) async throws -> T {
        try await transaction(begin: "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", body)
    }

    private func transaction<T: Sendable>(begin: String, _ body: (DatabaseSession) async throws -> T) async throws -> T {
        try await execute(begin, context: "starting a transaction")
        do {
            let value = try await body(self)
            try await execute("COMMIT", context: "committing")
            return value
        } catch {
            try? await execute("ROLLBACK", context: "rolling back")
            throw error
        }
    }

    /// Runs `body` holding the session-level advisory lock named `key` (waiting for it), and
    /// releases it however `body` ends: one holder at a time across the database's sessions.
    public func withLock<T: Sendable>(_ key: String, context: @autoclosure () -> String, _ body: () async throws -> T) async throws -> T {
        var binds = PostgresBindings()
        binds.append(key)
        try await execute("SELECT pg_advisory_lock(hashtext($1))", binds, context: context())
        do {
            let value = try await body()
            try await execute("SELECT pg_advisory_unlock(hashtext($1))", binds, context: context())
            return value
        } catch {
            try? await execute("SELECT pg_advisory_unlock(hashtext($1))", binds, context: context())
            throw error
        }
    }

    /// Runs `body` holding the session-level advisory lock named `key` if no other session holds
    /// it; returns nil at once, without running `body`, if one does.
    public func withLockIfFree<T: Sendable>(_ key: String, context: @autoclosure () -> String, _ body: () async throws -> T) async throws -> T? {
        var binds = PostgresBindings()
        binds.append(key)
        let taken: Bool = try await rows("SELECT pg_try_advisory_lock(hashtext($1))", binds, context: context())[0].value(0)
        guard taken else { return nil }
        do {
            let value = try await body()
            try await execute("SELECT pg_advisory_unlock(hashtext($1))", binds, context: context())
            return value
        } catch {
            try? await execute("SELECT pg_advisory_unlock(hashtext($1))", binds, context: context())
            throw error
        }
    }

    /// Wraps a connection lent by a pool (`PostgresClient.withConnection`); closing the session
    /// closes that connection, which the pool then drops.
    public static func lent(_ connection: PostgresConnection, logger: Logger) -> DatabaseSession {
        DatabaseSession(connection: connection, logger: logger)
    }

    /// Takes the transaction-level advisory lock named `key` (waiting for it); it is released
    /// when the transaction ends.
    public func lockForTransaction(_ key: String, context: @autoclosure () -> String) async throws(DatabaseError) {
        var binds = PostgresBindings()
        binds.append(key)
        try await execute("SELECT pg_advisory_xact_lock(hashtext($1))", binds, context: context())
    }
}

extension PostgresRow {
    /// Decodes column `index` as `T`, mapping decoding failures to ``DatabaseError``.
    public func value<T: PostgresDecodable>(_ index: Int, as type: T.Type = T.self, context: String = "reading a row") throws(DatabaseError) -> T {
        var cells = self.makeIterator()
        for _ in 0..<index { _ = cells.next() }
        guard let cell = cells.next() else { throw DatabaseError(context: context, message: "row has no column \(index)") }
        do {
            return try cell.decode(T.self)
        } catch {
            throw DatabaseError(context: context, message: "cannot decode column \(cell.columnName) as \(T.self): \(error)")
        }
    }
}
