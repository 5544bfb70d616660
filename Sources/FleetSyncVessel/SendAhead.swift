import FleetSyncCore
import FleetSyncTransport
import Logging

/// Send-ahead (docs/PROTOCOL.md, *Send-ahead*): while a vessel has more changes of its own than
/// one batch holds, the next batch is read from the outbox, compacted and encoded while the shore
/// applies the batch in flight, and goes out as soon as that one is acknowledged. The shore still
/// receives one exchange of the vessel at a time, in order, each acknowledging exactly what it
/// applied; only the vessel's own reading and encoding no longer waits for the shore's answer.
/// A batch read ahead is dropped (its events stay in the outbox and are read again) unless the
/// answer before it acknowledged that batch whole and brought nothing back.
enum SendAhead {
    /// The channel for a request sent while the vessel's session reads the next batch: its token
    /// read now, so that sending needs no database. Nil (no send-ahead for this batch) without a
    /// token or when it cannot be read.
    static func channel(_ channel: VesselChannel, logger: Logger) async -> VesselChannel.Prepared? {
        do {
            return try await channel.prepared()
        } catch {
            logger.debug("no send-ahead", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// Sends `bytes` and returns the answer with the next batch, read meanwhile by `preparing`
    /// (nil when it failed). Without a `prepared` channel, or when its token needs renewing, the
    /// request goes through `otherwise` (which may use the database) after the reading ended.
    static func send(_ bytes: [UInt8], through prepared: VesselChannel.Prepared?,
                     preparing: @escaping @Sendable () async throws -> VesselSync.Upload,
                     otherwise: @escaping @Sendable ([UInt8]) async throws -> ([UInt8], ExchangeResponse, WireEventBatch),
                     counting wire: WireCount, limits: WireLimits, sync: VesselSync) async throws -> (([UInt8], ExchangeResponse, WireEventBatch), VesselSync.Upload?) {
        guard let prepared else { return (try await otherwise(bytes), nil) }
        let logger = sync.logger
        async let next: VesselSync.Upload? = {
            do {
                return try await preparing()
            } catch {
                logger.debug("the next batch was not read ahead", metadata: ["error": "\(error)"])
                return nil
            }
        }()
        do {
            let answered = try await sync.sendRetryingBusy(bytes, via: { try await prepared.send($0, limits: $1) }, counting: wire, limits: limits)
            return (answered, await next)
        } catch is ReadAheadUnavailable {
            // The token needs renewing, which takes the database: once the reading is done.
            let following = await next
            return (try await otherwise(bytes), following)
        }
    }

    /// Whether `next`, read while `current` was at the shore, goes next: `answer` acknowledged
    /// `current` whole and brought nothing back (no events, no catch-up, no clock floor above
    /// `next`'s clock), and `next` was read under the shore's change size limit as it stands.
    static func follows(_ next: VesselSync.Upload, _ current: VesselSync.Upload, answer: ExchangeResponse, received: Int, shoreMaximumChangeBytes: Int64) -> Bool {
        !next.pending.events.isEmpty && answer.acknowledged == current.pending.upTo && received == 0 && answer.catchUp == nil && !answer.more
            && answer.clockFloor <= next.clock && next.shoreMaximumChangeBytes == shoreMaximumChangeBytes && next.request.cursor == current.request.cursor
    }
}
