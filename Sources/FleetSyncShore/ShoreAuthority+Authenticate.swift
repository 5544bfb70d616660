import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncTransport
import Foundation
import PostgresNIO
import Synchronization

/// The token secret as this process last read it from `fleetsync.auth_secret`.
///
/// It is never trusted alone: the statement that checks a vessel's standing for a request also
/// checks, in the same snapshot, that the secret the token was verified with is still the one in
/// PostgreSQL (``ShoreAuthority/authenticate(_:on:lock:)``). A secret replaced or deleted (the
/// answer to a stolen backup, docs/SECURITY.md) refuses old tokens at once on every replica, as
/// when each request read the secret; a token made by another replica under a secret this process
/// has not seen yet makes it read the secret again. Two statements per exchange fewer.
public final class TokenSecret: Sendable {
    private let cached = Mutex<[UInt8]?>(nil)

    public init() {}

    /// The secret last read, if any.
    var current: [UInt8]? { cached.withLock { $0 } }

    /// Reads the secret, creating it first if there is none (by whichever replica needs it
    /// first), in one statement, and keeps it.
    func load(on db: DatabaseSession) async throws -> [UInt8] {
        var binds = PostgresBindings()
        try binds.append(Data(secureRandomBytes(32)))
        // Exactly one row: the one inserted, or the one there (the select does not see the
        // insert's). Two replicas creating it at once: the insert that waited on the other's sees
        // a conflict and the select (its snapshot older than that commit) nothing: read again.
        for _ in 0..<2 {
            let rows = try await db.rows("""
                WITH created AS (
                  INSERT INTO fleetsync.auth_secret (id, secret) VALUES (1, $1) ON CONFLICT DO NOTHING RETURNING secret
                )
                SELECT secret FROM created UNION ALL SELECT secret FROM fleetsync.auth_secret WHERE id = 1
                """, binds, context: "reading the token secret")
            if let row = rows.first {
                let secret = Array(try row.decode(Data.self))
                cached.withLock { $0 = secret }
                return secret
            }
        }
        throw WireError(.internalError, "the token secret (fleetsync.auth_secret) could not be read; retry later")
    }
}

extension ShoreAuthority {
    /// The standing statement's binds: vessel, exchange id, token issued at, secret, lock key.
    /// One row: whether `secret` is the current token secret, the vessel's sealing key and
    /// authorization time if it is enrolled and not revoked, whether the exchange id is new (it
    /// is recorded only when the vessel stands, the token postdates its authorization and the
    /// secret is current), and, when all that holds and a lock key is given, whether the
    /// session took that advisory lock (nil otherwise).
    static let standingSQL = """
        WITH standing AS (
          SELECT sealing_key, floor(extract(epoch FROM authorized_since))::bigint AS since FROM fleetsync.vessel
          WHERE vessel_id = $1 AND revoked_at IS NULL AND sealing_key IS NOT NULL
        ), secret AS (
          SELECT EXISTS (SELECT 1 FROM fleetsync.auth_secret WHERE id = 1 AND secret = $4) AS current
        ), fresh AS (
          INSERT INTO fleetsync.seen_exchange (vessel, exchange_id)
          SELECT $1, $2 FROM standing, secret WHERE standing.since <= $3 AND secret.current
          ON CONFLICT DO NOTHING RETURNING 1
        )
        SELECT secret.current, standing.sealing_key, standing.since, EXISTS (SELECT 1 FROM fresh),
          CASE WHEN $5::text IS NOT NULL AND EXISTS (SELECT 1 FROM fresh) THEN pg_try_advisory_lock(hashtext($5::text)) END
        FROM secret LEFT JOIN standing ON true
        """

    /// Checks an unsealed request's token, the vessel's standing (enrolled, not revoked, token
    /// issued after its enrollment), then its exchange id (each is accepted once), in one
    /// statement with this process's token secret (``TokenSecret``). With `lock`, the same
    /// statement tries to take the session advisory lock of that name once everything passed:
    /// ``Opened/locked`` says whether it did, and the caller releases it.
    public func authenticate(_ unsealed: Unsealed, on db: DatabaseSession, lock: String? = nil) async throws -> Opened {
        let now = Int64(Date().timeIntervalSince1970)
        var fromCache = true
        var secret: [UInt8]
        if let cached = secrets.current {
            secret = cached
        } else {
            secret = try await secrets.load(on: db)
            fromCache = false
        }
        if fromCache, (try? AccessToken.verify(unsealed.token, secret: secret, now: now)) == nil {
            // Perhaps made under a secret this process has not read yet (another replica created
            // or replaced it): the secret is read again, and the token checked with it.
            secret = try await secrets.load(on: db)
            fromCache = false
        }
        var token = try AccessToken.verify(unsealed.token, secret: secret, now: now)
        var row = try await standing(of: token, unsealed, secret: secret, lock: lock, on: db)
        if !row.secretIsCurrent {
            // The secret changed since this process read it: the token is checked again with
            // the current one (a token of the old secret is refused here).
            guard fromCache else { throw WireError(.unauthenticated, "the token secret changed during the request; authenticate again") }
            secret = try await secrets.load(on: db)
            token = try AccessToken.verify(unsealed.token, secret: secret, now: now)
            row = try await standing(of: token, unsealed, secret: secret, lock: lock, on: db)
            guard row.secretIsCurrent else { throw WireError(.unauthenticated, "the token secret changed during the request; authenticate again") }
        }
        guard let sealingKey = row.sealingKey, let since = row.since, token.issuedAt >= since else {
            throw WireError(.unauthenticated, Self.authenticationFailed)
        }
        guard row.fresh else {
            throw WireError(.replayed, "exchange \(unsealed.exchangeID.uuidString.lowercased()) of vessel \(token.vessel) was already received: a replayed message is refused (a vessel retries with a new exchange id)")
        }
        if Int.random(in: 0..<64) == 0 {
            var age = PostgresBindings()
            age.append(Int32(Self.seenExchangeSeconds))
            try? await db.execute("DELETE FROM fleetsync.seen_exchange WHERE seen_at < now() - make_interval(secs => $1)", age, context: "forgetting old exchange ids")
        }
        return Opened(vessel: token.vessel, exchangeID: unsealed.exchangeID, sealingKey: sealingKey, binding: unsealed.binding, locked: row.locked)
    }

    private struct Standing {
        var secretIsCurrent: Bool
        var sealingKey: Data?
        var since: Int64?
        var fresh: Bool
        var locked: Bool?
    }

    /// One run of ``standingSQL`` for a verified token.
    private func standing(of token: AccessToken, _ unsealed: Unsealed, secret: [UInt8], lock: String?, on db: DatabaseSession) async throws -> Standing {
        guard token.vessel == unsealed.vessel else {
            throw WireError(.forbidden, "the sealed request names vessel \(unsealed.vessel) but carries the token of vessel \(token.vessel); a token acts only for its own vessel")
        }
        var binds = PostgresBindings()
        binds.append(token.vessel)
        binds.append(unsealed.exchangeID)
        binds.append(token.issuedAt)
        try binds.append(Data(secret))
        binds.append(lock)
        let rows = try await db.rows(StandingStatement.self, binds, context: "checking vessel \(token.vessel)'s standing and exchange \(unsealed.exchangeID)")
        let (current, key, since, fresh, locked) = try rows[0].decode((Bool, Data?, Int64?, Bool, Bool?).self)
        return Standing(secretIsCurrent: current, sealingKey: key, since: since, fresh: fresh, locked: locked)
    }
}
