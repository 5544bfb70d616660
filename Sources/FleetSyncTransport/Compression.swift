import CZlib

/// zlib compression of message bodies, with the inflated size bounded by the frame's header.
public enum Compression {
    public static func deflate(_ input: [UInt8], level: Int32 = 6) -> [UInt8] {
        var length = compressBound(uLong(input.count))
        var output = [UInt8](repeating: 0, count: Int(length))
        let status = output.withUnsafeMutableBufferPointer { out in
            input.withUnsafeBufferPointer { inp in
                compress2(out.baseAddress, &length, inp.baseAddress, uLong(input.count), level)
            }
        }
        precondition(status == Z_OK, "zlib compress2 failed with \(status)")
        output.removeSubrange(Int(length)...)
        return output
    }

    /// Inflates `input`, which must expand to exactly `expectedLength` bytes (already checked
    /// against the message limit), so a compression bomb cannot allocate more.
    public static func inflate(_ input: [UInt8], expectedLength: Int) -> [UInt8]? {
        var length = uLong(expectedLength)
        var output = [UInt8](repeating: 0, count: max(expectedLength, 1))
        let status = output.withUnsafeMutableBufferPointer { out in
            input.withUnsafeBufferPointer { inp in
                uncompress(out.baseAddress, &length, inp.baseAddress, uLong(input.count))
            }
        }
        guard status == Z_OK, Int(length) == expectedLength else { return nil }
        output.removeSubrange(expectedLength...)
        return output
    }
}
