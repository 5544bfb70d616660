import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The files of a key rotation in `[keys] directory`:
///
/// ```
/// identity.key  sealing.key  identity.pub            current keys
/// next/identity.key  next/sealing.key  next/identity.pub
/// next/endorsement                                   written last: the next keys are complete
/// next/promote                                       the promotion is decided (only goes forward)
/// previous/sealing.key  previous/identity.pub  previous/endorsement   (shore) the keys before the last promotion
/// ```
/// Every file is written to a temporary name, fsynced, renamed, and the directory fsynced, so a
/// crash leaves either the old file or the new one. Each operation is idempotent.
public struct KeyDirectory: Sendable {
    public var path: String
    public init(_ path: String) { self.path = path }

    public static let endorsementFile = "endorsement"
    public static let promoteFile = "promote"
    static let endorsementHeader = "fleetsync key endorsement: ML-DSA-65 signature by the previous identity key, base64"

    public var next: String { NodeKeys.path(path, "next") }
    public var previous: String { NodeKeys.path(path, "previous") }
    func file(_ directory: String, _ name: String) -> String { NodeKeys.path(directory, name) }
    func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    /// What is on disk, for the state machine.
    public func observe() -> KeyRotationMachine.Observed {
        var o = KeyRotationMachine.Observed()
        o.nextComplete = exists(file(next, Self.endorsementFile))
        o.promotionMarked = exists(file(next, Self.promoteFile))
        o.previousKept = exists(file(previous, Self.endorsementFile))
        o.filesInNext = Set([NodeKeys.identityFile, NodeKeys.sealingFile, NodeKeys.publicFile].filter { exists(file(next, $0)) })
        return o
    }

    /// When the current identity key file was written (its creation by keygen or its promotion).
    public func keysCreated() -> Date? {
        (try? FileManager.default.attributesOfItem(atPath: file(path, NodeKeys.identityFile)))?[.modificationDate] as? Date
    }

    /// When the next keys were completed, if they are.
    public func nextCreated() -> Date? {
        (try? FileManager.default.attributesOfItem(atPath: file(next, Self.endorsementFile)))?[.modificationDate] as? Date
    }

    /// What `status` says of this node's keys: their age and any rotation under way.
    public func statusLines() -> [String] {
        let formatter = ISO8601DateFormatter()
        var lines: [String] = []
        let fingerprint = (try? PublicIdentity.load(path: file(path, NodeKeys.publicFile)).fingerprint) ?? "?"
        if let created = keysCreated() {
            lines.append("keys:            \(fingerprint), created \(formatter.string(from: created)) (\(Int(Date().timeIntervalSince(created) / 86_400)) day(s) ago)")
        } else {
            lines.append("keys:            none in \(path) (fleetsync keygen)")
        }
        let o = observe()
        if o.promotionMarked {
            lines.append("key rotation:    promotion under way (the next start or fleetsync rotate-keys finishes it)")
        } else if o.nextComplete {
            let next = (try? PublicIdentity.load(path: file(next, NodeKeys.publicFile)).fingerprint) ?? "?"
            lines.append("key rotation:    pending since \(nextCreated().map { formatter.string(from: $0) } ?? "?"): next keys \(next) (fleetsync rotate-keys continues it)")
        } else if !o.filesInNext.isEmpty {
            lines.append("key rotation:    incomplete next keys in \(self.next) (fleetsync rotate-keys writes them again)")
        } else {
            lines.append("key rotation:    none")
        }
        if o.previousKept {
            lines.append("previous keys:   kept in \(previous) for vessels that have not learnt the current ones (fleetsync rotate-keys --forget-previous)")
        }
        return lines
    }

    // MARK: steps

    /// Writes new keys into `next/`, endorsed by `current`; a partial `next/` (a crash while
    /// writing) is replaced. Returns the new public identity.
    @discardableResult
    public func writeNext(_ keys: NodeKeys, node: String, role: String, endorsedBy current: NodeKeys) throws -> PublicIdentity {
        try? FileManager.default.removeItem(atPath: next)
        try NodeKeys.makeDirectory(next)
        let identity = try keys.publicIdentity(node: node, role: role)
        try Self.writeAtomically(NodeKeys.identityHeader + "\n" + keys.identity.integrityCheckedRepresentation.base64EncodedString() + "\n", to: file(next, NodeKeys.identityFile), mode: 0o600)
        try Self.writeAtomically(NodeKeys.sealingHeader + "\n" + keys.sealing.integrityCheckedRepresentation.base64EncodedString() + "\n", to: file(next, NodeKeys.sealingFile), mode: 0o600)
        try Self.writeAtomically(identity.text, to: file(next, NodeKeys.publicFile), mode: 0o644)
        let endorsement = try KeyEndorsement.sign(new: identity, by: current)
        try Self.writeAtomically(Self.endorsementHeader + "\n" + endorsement.base64EncodedString() + "\n", to: file(next, Self.endorsementFile), mode: 0o644)
        return identity
    }

    /// The complete next keys, their public identity and endorsement.
    public func loadNext() throws -> (keys: NodeKeys, identity: PublicIdentity, endorsement: Data) {
        (try NodeKeys.load(directory: next), try PublicIdentity.load(path: file(next, NodeKeys.publicFile)), try readEndorsement(next))
    }

    func readEndorsement(_ directory: String) throws -> Data {
        let path = file(directory, Self.endorsementFile)
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw SecurityError("cannot read \(path)") }
        let lines = text.split(separator: "\n")
        guard lines.count == 2, lines[0] == Self.endorsementHeader, let data = Data(base64Encoded: String(lines[1])) else {
            throw SecurityError("\(path) is not a FleetSync key endorsement file")
        }
        return data
    }

    public func markPromotion() throws {
        try Self.writeAtomically("the keys in this directory replace the current ones; the promotion only goes forward\n", to: file(next, Self.promoteFile), mode: 0o600)
    }

    /// (shore) Keeps the current sealing key, public identity and the endorsement of the next
    /// keys in `previous/`, so that requests still sealed to the old key open after promotion and
    /// vessels that have not seen the announcement can check the new key.
    public func keepPrevious() throws {
        try? FileManager.default.removeItem(atPath: previous)
        try NodeKeys.makeDirectory(previous)
        for (name, mode) in [(NodeKeys.sealingFile, 0o600), (NodeKeys.publicFile, 0o644)] {
            guard let text = try? String(contentsOfFile: file(path, name), encoding: .utf8) else { throw SecurityError("cannot read \(file(path, name))") }
            try Self.writeAtomically(text, to: file(previous, name), mode: mode_t(mode))
        }
        let endorsement = try String(contentsOfFile: file(next, Self.endorsementFile), encoding: .utf8)
        try Self.writeAtomically(endorsement, to: file(previous, Self.endorsementFile), mode: 0o644)
    }

    /// Moves one key file from `next/` over the current one (a rename: atomic).
    public func promote(_ name: String) throws {
        guard exists(file(next, name)) else { return }
        guard rename(file(next, name), file(path, name)) == 0 else {
            throw SecurityError("cannot move \(file(next, name)) to \(file(path, name)): \(String(cString: strerror(errno)))")
        }
        Self.syncDirectory(path)
    }

    /// Removes `next/` once its keys are current.
    public func finish() throws {
        for name in [Self.endorsementFile, Self.promoteFile] { try? FileManager.default.removeItem(atPath: file(next, name)) }
        try? FileManager.default.removeItem(atPath: next)
        Self.syncDirectory(path)
    }

    public func forgetPrevious() throws {
        if exists(previous) { try FileManager.default.removeItem(atPath: previous) }
        Self.syncDirectory(path)
    }

    /// Runs a file step of the machine (steps that need the shore are the driver's).
    public func perform(_ step: KeyRotationStep) throws {
        switch step {
        case .markPromotion: try markPromotion()
        case .keepPrevious: try keepPrevious()
        case .promoteIdentityKey: try promote(NodeKeys.identityFile)
        case .promoteSealingKey: try promote(NodeKeys.sealingFile)
        case .promotePublicIdentity: try promote(NodeKeys.publicFile)
        case .finish: try finish()
        case .writePending, .sendEndorsement, .forgetToken, .confirmNewKey:
            throw SecurityError("step \(step.rawValue) is not a file step")
        }
    }

    /// Finishes a promotion that was decided (`next/promote`) but cut off by a crash: the key
    /// files are moved so that the node starts with the new keys. Returns true if one was under way.
    /// A vessel's `next/` stays until its driver confirmed the new key with the shore.
    @discardableResult
    public func completeDecidedPromotion(role: KeyRotationMachine.Role) throws -> Bool {
        let machine = KeyRotationMachine(role: role)
        guard observe().promotionMarked else { return false }
        while let step = machine.next(observe()), step != .confirmNewKey {
            try perform(step)
            if step == .finish { break }
        }
        return true
    }

    // MARK: files

    /// Writes `text` to `path` with `mode`: a temporary file, fsync, rename, fsync of the directory.
    public static func writeAtomically(_ text: String, to path: String, mode: mode_t) throws {
        let temporary = path + ".tmp"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL, mode)
        guard fd >= 0 else { throw SecurityError("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        _ = fchmod(fd, mode)
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == bytes.count, synced, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw SecurityError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        syncDirectory((path as NSString).deletingLastPathComponent)
    }

    static func syncDirectory(_ directory: String) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }
}
